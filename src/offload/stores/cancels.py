"""``CancelSignals`` for stores that can read a worker's flagged jobs cheaply (memory,
SQLite, PostgreSQL): a read of the flags turned into reports of new requests.

A store pokes the watch when it knows something may have changed (a ``cancel`` in this
process, a notification from its server), and gives it a token that moves when another
process may have written (SQLite's ``data_version``); the watch then reads the worker's
running jobs whose cancellation was asked for, and reports those it has not reported to
that worker before. Reading the flags rather than passing the ids along means pokes may
be merged or spurious without a request being missed or told twice, and a call that starts
reads once anyway: the flags hold every request, a poke only says when to look.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable

Read = Callable[[str], Awaitable[set[str]]]
"""The ids of the jobs running under a worker whose cancellation was asked for."""


class CancelWatch:
    """Per worker: what was reported to it, and an event to wake its waiting call."""

    def __init__(
        self,
        read: Read,
        token: Callable[[], Hashable] | None = None,
        interval: float | None = None,
    ) -> None:
        self._read = read
        # Looked at every ``interval`` seconds (None: only pokes wake a call); a change
        # makes the look a read.
        self._token = token
        self._interval = interval
        # Ids reported and still flagged; a worker with none has no entry, so a worker
        # that stopped leaves at most the few ids it held behind.
        self._reported: dict[str, set[str]] = {}
        self._waiting: dict[str, list[asyncio.Event]] = {}

    def poke(self, worker_id: str | None = None) -> None:
        """Something may have changed for ``worker_id`` (``None``: for any worker)."""
        if worker_id is None:
            events = [e for waiters in self._waiting.values() for e in waiters]
        else:
            events = self._waiting.get(worker_id, [])
        for event in events:
            event.set()

    async def requests(self, worker_id: str, timeout: float) -> set[str]:
        """``CancelSignals.cancel_requests``: a read when the call starts (a poke between
        two calls would otherwise be lost), then one per poke or change of token."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        event = asyncio.Event()
        waiters = self._waiting.setdefault(worker_id, [])
        waiters.append(event)
        try:
            fresh = True
            seen: Hashable = None
            while True:
                token = self._token() if self._token is not None else None
                if fresh or event.is_set() or token != seen:
                    event.clear()
                    seen = token
                    new = await self._report(worker_id)
                    if new:
                        return new
                fresh = False
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return set()
                pause = remaining if self._interval is None else min(self._interval, remaining)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await event.wait()
        finally:
            waiters.remove(event)
            if not waiters:
                del self._waiting[worker_id]

    async def _report(self, worker_id: str) -> set[str]:
        flagged = await self._read(worker_id)
        new = flagged - self._reported.get(worker_id, set())
        if flagged:
            self._reported[worker_id] = flagged
        else:
            self._reported.pop(worker_id, None)
        return new
