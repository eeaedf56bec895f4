"""Every store passes the whole conformance suite, with no skips."""

from offload.testing import StoreConformance


class TestConformance(StoreConformance):
    """Runs ``offload.testing.StoreConformance`` against each store of ``conftest.STORES``."""
