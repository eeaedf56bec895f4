"""The Redis store: one package with its key layout, its Lua scripts (``lua/``), its
connection and its fault policy, the template a server store follows.

Modules: ``store`` (the operations), ``connection`` (clients, the queue registry and wake-ups),
``link`` (the hot path's own connection), ``faults`` (retries, refusals, deadlines),
``layout`` (URL options, keys, rows), ``scripts`` (loading and calling the Lua), ``scan``
(listing and purging).
"""

from offload.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
