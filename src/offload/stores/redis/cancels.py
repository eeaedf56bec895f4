"""``CancelSignals`` for the Redis store: a pub/sub channel per worker.

The cancel script publishes a running job's id on its worker's channel in the same step
that sets the job's ``cancel_requested`` flag (``ask_cancel`` in ``lua/prelude.lua``), and
the worker, subscribed from its first call on, hears it in one network hop. Pub/sub rather
than a list per worker: a channel is no key, so the script, which touches only its queue's
hash slot, may publish to it on a Cluster too, and nothing is left behind by a worker that
died. What pub/sub loses (a message sent while the subscriber's connection was down) the
flag keeps, and the worker's next heartbeat reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio.client import PubSub

from offload.stores.redis.connection import RedisConnection

log = logging.getLogger("offload.store.redis")


def channel_prefix(prefix: str) -> str:
    """The workers' cancel channels are this followed by the worker's id."""
    return f"{{{prefix}}}:cancel:"


class CancelChannels:
    """One subscription per worker that asked, each on a connection of its own, read only
    by that worker's calls (one at a time), so no reader task is needed."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._subs: dict[str, PubSub] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def prefix(self) -> str:
        return channel_prefix(self._conn.layout.prefix)

    async def requests(self, worker_id: str, timeout: float) -> set[str]:
        """``CancelSignals.cancel_requests``; the first call subscribes, and returns only
        once the server confirmed it, so that every later request is heard."""
        lock = self._locks.setdefault(worker_id, asyncio.Lock())
        async with lock:
            sub = self._subs.get(worker_id)
            if sub is None:
                sub = await self._subscribe(worker_id)
            return await _read(sub, timeout)

    async def _subscribe(self, worker_id: str) -> PubSub:
        sub = self._conn.redis.pubsub()
        channel = self.prefix + worker_id
        try:
            async with asyncio.timeout(self._conn.opts.op_timeout):
                await sub.subscribe(channel)
                while True:
                    message = await sub.get_message(timeout=self._conn.opts.op_timeout)
                    if message is not None and message["type"] == "subscribe":
                        break
        except BaseException:
            await sub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._subs[worker_id] = sub
        return sub

    async def forget(self, worker_id: str) -> None:
        """The worker stopped (``forget_worker``): its subscription's connection goes, so
        a process that runs workers one after another holds one at a time."""
        self._locks.pop(worker_id, None)
        sub = self._subs.pop(worker_id, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        subs, self._subs = self._subs, {}
        self._locks.clear()
        for sub in subs.values():
            with contextlib.suppress(Exception):
                await sub.aclose()  # type: ignore[no-untyped-call]


async def _read(sub: PubSub, timeout: float) -> set[str]:
    """The ids published before ``timeout`` passes, from the first one on with those
    already arrived with it (a workflow cancelled at once sends several)."""
    ids: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    while True:
        wait = 0.0 if ids else max(deadline - loop.time(), 0.0)
        message: dict[str, Any] | None = await sub.get_message(timeout=wait)
        if message is None:
            if ids or loop.time() >= deadline:
                return ids
            continue
        if message["type"] == "message":
            ids.add(str(message["data"]))
