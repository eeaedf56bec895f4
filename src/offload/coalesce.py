"""Group commit across callers: concurrent enqueues share one store call.

Requests arrive together, and each one's enqueue used to pay a store round trip of its own
(a thread hop and a transaction on SQLite, a script call on Redis, a transaction on
PostgreSQL). Here one call is in flight at a time; the calls that arrive meanwhile wait for
it and then go together, as one batch, so under load a round trip carries as many jobs as
arrived during the previous one, and a call alone pays no wait at all (it goes at once).
The added wait is bounded by one store call.

Every caller still returns only once its own jobs are stored. A batch the store refuses
(``QueueFull`` for one caller's task, say) is sent again caller by caller, so that each gets
its own answer and none is refused for another's jobs; a store that is down fails them all
at once instead of once each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from offload.errors import StoreUnavailable
from offload.records import JobRecord
from offload.stores.base import NewJob

__all__ = ["Coalescer"]

Send = Callable[[Sequence[NewJob]], Awaitable[list[JobRecord]]]


class Coalescer:
    """Sends enqueue calls of one event loop to the store, at most one call at a time."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self._waiting: list[tuple[Sequence[NewJob], asyncio.Future[list[JobRecord]]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            # A call from another loop (a script's own thread) goes alone: the batch and its
            # futures belong to the loop that made them.
            return await self._send(jobs)
        if not self._busy:
            self._busy = True
            try:
                return await self._send(jobs)
            finally:
                self._next()
        future: asyncio.Future[list[JobRecord]] = loop.create_future()
        self._waiting.append((jobs, future))
        return await future

    def _next(self) -> None:
        """The call in flight is done: send what waited for it, or go idle."""
        if not self._waiting:
            self._busy = False
            return
        batch, self._waiting = self._waiting, []
        assert self._loop is not None
        self._flush = self._loop.create_task(self._send_batch(batch))

    async def _send_batch(
        self, batch: list[tuple[Sequence[NewJob], asyncio.Future[list[JobRecord]]]]
    ) -> None:
        # A caller that gave up before its turn (a request whose client went away) stores
        # nothing, as when it is cancelled before its own store call.
        live = [(jobs, future) for jobs, future in batch if not future.done()]
        try:
            if len(live) == 1:
                await self._one(*live[0])
            elif live:
                await self._together(live)
        except BaseException as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else StoreUnavailable(str(exc))
                    )
            raise
        finally:
            self._next()

    async def _one(self, jobs: Sequence[NewJob], future: asyncio.Future[list[JobRecord]]) -> None:
        try:
            records = await self._send(jobs)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(records)

    async def _together(
        self, live: list[tuple[Sequence[NewJob], asyncio.Future[list[JobRecord]]]]
    ) -> None:
        merged = [job for jobs, _ in live for job in jobs]
        try:
            records = await self._send(merged)
        except StoreUnavailable as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:
            # One caller's jobs refused the batch: each caller on its own, for its answer.
            for jobs, future in live:
                await self._one(jobs, future)
            return
        start = 0
        for jobs, future in live:
            end = start + len(jobs)
            if not future.done():
                future.set_result(records[start:end])
            start = end
