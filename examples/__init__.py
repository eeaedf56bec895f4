"""Example applications built on offload's public API."""
