"""Concurrent enqueues sent together: one statement, one commit, on a connection kept for it.

Each enqueue is a commit, and a commit waits for the WAL to reach the disk; forty endpoints
enqueueing at once would queue forty of those waits behind one another. Here the callers that
arrive while a statement is in flight wait for it to finish and then go together, in one
statement, so they share one commit (group commit), and a lone caller goes at once (one hop
to the sending task). The connection is held by the batcher, not checked out of the pool per call,
which saves a lone caller the pool's bookkeeping on every enqueue.

A statement fails as a whole; so when one that carried several callers fails for a reason
other than the connection (a value the server refuses), each caller's jobs are sent again on
their own, and only the caller whose jobs are at fault sees the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from offload.records import JobRecord
from offload.stores.base import NewJob

Conn = psycopg.AsyncConnection[TupleRow]
Send = Callable[[Conn, list[NewJob]], Awaitable[list[JobRecord]]]

# Jobs of concurrent callers sent in one statement at most (one caller's own batch is never
# split), so that one statement never holds the server for long.
MAX_BATCH = 1000


class Batcher:
    def __init__(self, pool: AsyncConnectionPool[Conn], send: Send, op_timeout: float) -> None:
        self._pool = pool
        self._send = send
        self._timeout = op_timeout
        self._conn: Conn | None = None
        self._pending: list[tuple[list[NewJob], asyncio.Future[list[JobRecord]]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def enqueue(self, jobs: list[NewJob]) -> list[JobRecord]:
        fut: asyncio.Future[list[JobRecord]] = asyncio.get_running_loop().create_future()
        self._pending.append((jobs, fut))
        if not self._busy:
            # A task of its own, not the caller: a caller cancelled while the statement is
            # in flight (a request that timed out) must not cut off the others' batch.
            self._busy = True
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def close(self) -> None:
        """After the batch in flight, if any: its callers get their answer."""
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.putconn(conn)

    async def _drain(self) -> None:
        try:
            await self._send_pending()
        finally:
            self._busy = False

    async def _send_pending(self) -> None:
        while self._pending:
            batch: list[tuple[list[NewJob], asyncio.Future[list[JobRecord]]]] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0][0]) <= MAX_BATCH):
                item = self._pending.pop(0)
                batch.append(item)
                size += len(item[0])
            await self._run(batch)

    async def _run(self, batch: list[tuple[list[NewJob], asyncio.Future[list[JobRecord]]]]) -> None:
        try:
            records = await self._statement([job for jobs, _ in batch for job in jobs])
        except psycopg.Error as exc:
            if len(batch) > 1 and not isinstance(exc, psycopg.OperationalError):
                for item in batch:  # find out whose jobs the server refused
                    await self._run([item])
                return
            _fail(batch, exc)
            return
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for jobs, fut in batch:
            if not fut.done():
                fut.set_result(records[start : start + len(jobs)])
            start += len(jobs)

    async def _statement(self, jobs: list[NewJob]) -> list[JobRecord]:
        async with asyncio.timeout(self._timeout):
            if self._conn is None:
                self._conn = await self._pool.getconn()
            conn = self._conn
            try:
                return await self._send(conn, jobs)
            except BaseException:
                # A broken connection goes back to the pool, which drops it; a healthy one
                # is handed back too rather than kept in an unknown state.
                self._conn = None
                await self._pool.putconn(conn)
                raise


def _fail(batch: list[tuple[Any, asyncio.Future[list[JobRecord]]]], exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
