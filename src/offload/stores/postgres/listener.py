"""Wake-ups by LISTEN/NOTIFY: one connection per process listens on the store's channel.

Every enqueue notifies the channel with its queue's name, on commit (inside an
application's transaction too: PostgreSQL sends notifications only when it commits). The
listener resolves the waiters of that queue, and of every queue. While the connection is
down, waiters time out after ``poll`` seconds at most, so idle workers look for work at
that pace until it is back (reconnecting with backoff); with ``listen=false`` (a pooler in
transaction mode cannot hold a LISTEN) that poll is all there is.

A cancel of a running job notifies the same channel with ``CANCEL_MARK`` and the worker's
id (``CancelSignals``): the listener hands it to ``on_cancel`` instead of waking waiters
for work. One channel, so one LISTEN serves both; a queue named with the mark in front
would be taken for a cancel (its waiters then wake by their timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql

from offload.stores.postgres.options import PostgresOptions
from offload.stores.postgres.rows import first_line

log = logging.getLogger("offload.store.postgres")

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
# Payloads of cancel notifications start with this (then the worker's id): a control
# character, which no queue name anyone chose is likely to start with.
CANCEL_MARK = "\x1ecancel:"


class Listener:
    def __init__(self, opts: PostgresOptions) -> None:
        self._opts = opts
        self._waiters: dict[asyncio.Future[None], frozenset[str] | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self.connected = False
        # Counts the connections made, so that a watch of cancels can tell that the
        # listener was away (and what it did not hear must be read).
        self.generation = 0
        # Told the worker id of a cancel notification; ``None``: every worker (what was
        # committed while nobody listened was not heard).
        self.on_cancel: Callable[[str | None], None] = _ignore

    async def start(self) -> None:
        """Listen from the first wait on: a process that only enqueues (a web app whose
        workers run elsewhere) never holds the connection, nor hears its own notifications,
        which would cost it a wake-up for every job it enqueues."""
        if not self._opts.listen or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="offload-postgres-listen")
        # The first connection is made before open returns, so that a job enqueued right
        # after open wakes a worker that is already waiting; a server that is down makes
        # this give up after op_timeout, and the loop keeps trying.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._opts.op_timeout):
                await self._up.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake_all()

    def register(self, queues: Sequence[str] | None) -> asyncio.Future[None]:
        """A future that resolves when work for ``queues`` (``None``: any) may have arrived;
        registered before the caller's claim, so that nothing committed after that claim
        looked can be missed. The caller must ``discard`` it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[fut] = None if queues is None else frozenset(queues)
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        self._waiters.pop(fut, None)
        if not fut.done():
            fut.cancel()

    def limit(self, timeout: float) -> float:
        """How long a waiter may sleep: its timeout, or the poll interval when no listening
        connection would wake it."""
        return timeout if self.connected else min(timeout, self._opts.poll)

    def notify_local(self, queues: Sequence[str]) -> None:
        """Work this process just committed: wake its own waiters without waiting for the
        notification's trip through the server."""
        self._wake(set(queues))

    def _wake(self, queues: set[str]) -> None:
        for fut, wanted in list(self._waiters.items()):
            if wanted is None or not wanted.isdisjoint(queues):
                del self._waiters[fut]
                if not fut.done():
                    fut.set_result(None)

    def _wake_all(self) -> None:
        for fut in list(self._waiters):
            self._waiters.pop(fut, None)
            if not fut.done():
                fut.set_result(None)

    def _down(self, exc: BaseException, lost: bool) -> None:
        """One line when the listening connection goes (or cannot be made), not one per try."""
        reason = first_line(exc)
        where = self._opts.display_url
        log.warning(
            f"PostgreSQL LISTEN connection to {where} lost ({reason}); reconnecting"
            if lost
            else f"PostgreSQL at {where} unreachable for LISTEN ({reason}); retrying",
            extra={
                "action": "store.postgres_listen_down",
                "url": where,
                "reason": reason,
                "poll": self._opts.poll,
            },
        )

    async def _run(self) -> None:
        """Listen, and reconnect with backoff while the server is gone; meanwhile waiters
        sleep at most ``poll`` seconds (``limit``), so idle workers still look for work."""
        delay = BACKOFF_FIRST
        down_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._opts.conninfo, autocommit=True)
            except (psycopg.OperationalError, OSError) as exc:
                if down_since is None:
                    down_since = loop.time()
                    self._down(exc, lost=False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            try:
                async with conn:
                    await conn.execute(
                        sql.SQL("LISTEN {}").format(sql.Identifier(self._opts.channel))
                    )
                    self.connected = True
                    self.generation += 1
                    self._up.set()
                    if down_since is not None:
                        log.warning(
                            f"PostgreSQL LISTEN at {self._opts.display_url} is back",
                            extra={
                                "action": "store.postgres_listen_back",
                                "url": self._opts.display_url,
                                "down_for": round(loop.time() - down_since, 3),
                            },
                        )
                        down_since = None
                    delay = BACKOFF_FIRST
                    # Anything committed while nobody listened was not heard: wake everyone.
                    self._wake_all()
                    self.on_cancel(None)
                    async for note in conn.notifies():
                        payload = note.payload
                        if payload.startswith(CANCEL_MARK):
                            self.on_cancel(payload[len(CANCEL_MARK) :])
                        else:
                            self._wake({payload})
            except (psycopg.OperationalError, OSError) as exc:
                if down_since is None:
                    down_since = loop.time()
                    self._down(exc, lost=True)
            finally:
                self.connected = False
                self._wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)


def _ignore(worker_id: str | None) -> None:
    return None
