"""The Redis store's connection: clients, timeouts, the queue registry and wake-ups.

Kept apart from ``store.py`` so that the store module reads as the list of operations. A
dropped connection is retried with exponential backoff inside redis-py; an operation that
still fails within ``op_timeout`` raises ``StoreUnavailable`` so that a producer is never left
hanging while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import hiredis
from redis import ConnectionPool as BlockingPool
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import AbstractConnection as SyncConnection
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as BlockingRetry

from offload.errors import StoreUnavailable
from offload.stores.redis.faults import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    RETRIES,
    UNREACHABLE,
    Deadlines,
    Outage,
    backoff,
    is_refused,
    refusal,
)
from offload.stores.redis.layout import (
    Layout,
    RedisOptions,
    check_layout,
    check_layout_version,
    layout_commands,
    parse_redis_url,
    warn_if_evicting,
)
from offload.stores.redis.link import BlockingLink, Link, connection_class
from offload.stores.redis.migrate import upgrade
from offload.stores.redis.scripts import Scripts

# Operations in flight per store and process: a burst of concurrent enqueues waits for a
# free connection rather than opening hundreds of sockets. (An asyncio.Semaphore: redis-py's
# blocking pool costs a loop iteration per command even when a connection is free.)
MAX_CONNECTIONS = 32
# Connecting is quick on a LAN; a black-holed host must not eat the whole op_timeout at once.
CONNECT_TIMEOUT = 1.0
# How stale the cached list of queues may be for operations over all queues.
QUEUES_MAX_AGE = 1.0
# After a failed blocking wait, pause this long so a worker does not spin while Redis is down.
WAIT_ERROR_PAUSE = 0.2


@functools.cache
def _driver_info() -> DriverInfo:
    return DriverInfo()


def _not_open() -> StoreUnavailable:
    return StoreUnavailable("the Redis store is not open: use `async with jobs:` or jobs.lifespan")


class Guard:
    """``RedisConnection.guard``: a class, not a generator, since it wraps every operation."""

    __slots__ = ("conn", "outer", "task", "what")

    def __init__(self, conn: RedisConnection, what: str) -> None:
        self.conn = conn
        self.what = what

    async def __aenter__(self) -> None:
        conn = self.conn
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - an async context manager always runs in a task
            raise RuntimeError("a store operation must run in a task")
        due = conn.deadlines.due
        self.task = task
        self.outer = outer = due.get(task)
        when = loop.time() + conn.opts.op_timeout
        due[task] = when if outer is None else min(outer, when)
        conn.deadlines.arm(loop, when)
        try:
            await conn._slots.acquire()
        except BaseException as exc:
            if self._leave(type(exc)):
                raise conn.unavailable(self.what, TimeoutError()) from exc
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self.conn._slots.release()
        if self._leave(exc_type):
            self.conn.outage.down = True
            raise self.conn.unavailable(self.what, TimeoutError()) from exc
        if exc is not None and isinstance(exc, UNREACHABLE):
            self.conn.outage.down = True
            raise self.conn.unavailable(self.what, exc) from exc
        refused = None if exc is None else self.conn.refused(self.what, exc)
        if refused is not None:
            raise refused from exc

    def _leave(self, exc_type: type[BaseException] | None) -> bool:
        """Drop this guard's deadline; true if it expired and cancelled the task."""
        deadlines, task, outer = self.conn.deadlines, self.task, self.outer
        if outer is None:
            del deadlines.due[task]
        else:
            deadlines.due[task] = outer
        if task not in deadlines.expired or (outer is not None and outer <= task.get_loop().time()):
            return False  # not expired, or an outer guard owns the expiry
        deadlines.expired.discard(task)
        return task.uncancel() == 0 and exc_type is asyncio.CancelledError


class RedisConnection:
    """What every store operation needs: a client, the scripts, and where queues and jobs are."""

    def __init__(self, url: str) -> None:
        self.opts: RedisOptions = parse_redis_url(url)
        self.layout = Layout(self.opts.prefix)
        self.scripts = Scripts()
        self._client: Redis | None = None
        self._known: set[str] = set()
        self._known_at = -math.inf
        self.registered: set[str] = set()
        """Queues this process has added to the registry (so it need not add them again)."""
        self.where: dict[str, str] = {}
        """Queue of each job claimed through this store, so heartbeats and completions (which
        carry only ids) go straight to the right slot."""
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.deadlines = Deadlines()
        # Connections for the hot path (see _exchange); at most MAX_CONNECTIONS are busy.
        self._lean: ConnectionPool | None = None
        self._idle: list[Link] = []
        self.outage = Outage()
        # Connections for callers outside the event loop (run_blocking), made on first use,
        # shared by threads (a list's pop and append are atomic).
        self._blocking_pool: BlockingPool | None = None
        self._blocking_idle: list[BlockingLink] = []
        self._layout_checked = False

    def _make_pool(self, retries: int) -> ConnectionPool:
        retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), retries)
        return ConnectionPool.from_url(
            self.opts.client_url,
            # The semaphore in guard keeps us below this; the pool never refuses.
            max_connections=MAX_CONNECTIONS + 8,
            connection_class=connection_class(self.opts.client_url),
            decode_responses=True,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_connect_timeout=CONNECT_TIMEOUT,
            # No timeout per socket operation: every call is bounded by a deadline around the
            # whole of it (guard, or wait_then_run's own). With one, redis-py sends through
            # asyncio.wait_for, which on Python 3.11 drops a cancellation that arrives as the
            # send completes, so a cancelled caller (a stopping worker's loop) ran on.
            socket_timeout=None,
            socket_keepalive=True,
            # Built once: left to itself, redis-py looks its own version up in the installed
            # packages' metadata for every new connection (about 1 ms of blocked event loop
            # each, 32 of them as a worker warms up).
            driver_info=_driver_info(),
        )

    async def open(self) -> None:
        if self._client is not None:
            return
        client = Redis.from_pool(self._make_pool(RETRIES))
        # No retries of redis-py's own on the hot path's connections: _exchange retries the
        # whole call, under the Outage policy.
        lean = self._make_pool(0)
        first: Link | None = None
        try:
            async with self.guard("connecting"):
                # One hot-path connection first, under the Outage policy: a server refusing
                # connections is known within REFUSED_WINDOW, and at once to every open
                # after one gave up (an app whose every request opens the store anew), not
                # after the client's own retries. It serves the first enqueue, too.
                first = await self._connect(lean)
                version = await check_layout(client, self.layout, self.opts.display_url)
                await upgrade(client, self.layout, version)
                await warn_if_evicting(client, self.opts.display_url)
                await self.scripts.load(client)
        except BaseException:
            if first is not None:
                await first.aclose()
            await client.aclose()
            raise
        self._client = client
        self._lean = lean
        self._idle.append(first)
        self._layout_checked = True
        await self.refresh_known(0.0)

    async def _connect(self, pool: ConnectionPool) -> Link:
        return await self.outage.call(
            lambda: Link.open(pool.make_connection())  # type: ignore[no-untyped-call]
        )

    async def close(self) -> None:
        client = self._client
        self._client = self._lean = None
        idle, self._idle = self._idle, []
        for link in idle:
            await link.aclose()
        if client is not None:
            await client.aclose()
        blocking, self._blocking_idle = self._blocking_idle, []
        for other in blocking:
            other.close()

    @property
    def redis(self) -> Redis:
        client = self._client
        if client is None:
            raise _not_open()
        return client

    def guard(self, what: str) -> Guard:
        """Bound ``what`` by ``op_timeout`` and turn an unreachable server into one clear error."""
        return Guard(self, what)

    def unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        if is_refused(exc):
            return StoreUnavailable(
                f"{what} failed: Redis at {self.opts.display_url} did not answer: it refused "
                f"the connection ({exc}). Check that redis-server is running and listens at "
                "that address and port; the operation was not applied."
            )
        return StoreUnavailable(
            f"{what} failed: Redis at {self.opts.display_url} did not answer within "
            f"{self.opts.op_timeout:g} s ({type(exc).__name__}: {exc or 'timed out'}). Check "
            "that redis-server is running and reachable from here, and the URL's password and "
            "TLS settings; the operation may not have been applied."
        )

    def refused(self, what: str, exc: BaseException) -> StoreUnavailable | None:
        """``exc`` worded as ``StoreUnavailable`` if it is a refusal that passes (refusal)."""
        reason = refusal(exc)
        if reason is None:
            return None
        return StoreUnavailable(
            f"{what} refused: Redis at {self.opts.display_url} {reason} (the server said: "
            f"{exc}); the operation may not have been applied."
        )

    async def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one round trip (scripts by SHA, reloaded if the server lost them)."""
        return await self.scripts.run(self._exchange, self.redis, commands)

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        [reply] = await self.run([self.scripts.evalsha(name, keys, args)])
        return reply

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Write ``commands`` at once and read their replies, on a connection of our own.

        The hot path skips redis-py's client layer (pool locks, a timeout per read, the
        retry wrapper) and its stream reader, which together cost more than the round trip
        itself on a local server: connecting, AUTH, SELECT and TLS stay redis-py's, and a
        ``Link`` reads the replies (see ``link.py``). The whole call is bounded by
        ``guard``'s deadline instead of one per read. A connection is reused only after a
        complete exchange, so a call cut short (by that deadline or a cancellation) can never
        leave replies for the next caller."""
        pool = self._lean
        if pool is None:
            raise _not_open()
        idle = self._idle
        # hiredis packs in C; redis-py's pack_commands adds a Python loop around it.
        packed = b"".join(map(hiredis.pack_command, commands))
        count = len(commands)

        async def attempt() -> list[Any]:
            # Links the server closed while they sat idle (a restart, a client timeout) are
            # dropped here, not tried: each would cost a failed attempt and a backoff.
            while idle and idle[-1].broken:
                idle.pop()
            if idle:
                link = idle.pop()
            else:
                link = await Link.open(pool.make_connection())  # type: ignore[no-untyped-call]
            replies = await link.exchange(packed, count)
            if self._lean is not pool:  # the store was closed meanwhile
                await link.aclose()
            elif link.broken:
                # Closed on a READONLY reply: the server became a replica (a failover), so
                # every connection to it is stale. New ones reach the new primary wherever the
                # URL follows it (a DNS name, a proxy); the error goes to the caller (guard
                # words it).
                while idle:
                    idle.pop().close()
            else:
                idle.append(link)
            return replies

        return await self.outage.call(attempt)

    def run_blocking(self, what: str, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``run`` for a thread outside the event loop, with ``guard``'s promise: within
        ``op_timeout`` the replies come back or ``StoreUnavailable`` says why not.

        It needs nothing the loop owns, so it works before ``open`` (and without any loop):
        the first connection checks the layout version as ``open`` does."""
        outage = self.outage
        began = time.monotonic()
        deadline = began + self.opts.op_timeout
        failures = 0
        while True:
            try:
                replies = self.scripts.run_blocking(self._exchange_blocking, commands)
            except UNREACHABLE as exc:
                now = time.monotonic()
                pause = backoff(failures + 1)
                if now + pause >= deadline or outage.give_up(exc, 0, now - began, pause):
                    outage.down = True
                    raise self.unavailable(what, exc) from exc
                failures += 1
                time.sleep(pause)
                continue
            except ResponseError as exc:
                refused = self.refused(what, exc)
                if refused is None:
                    raise
                raise refused from exc
            if outage.down:
                outage.down = False
            return replies

    def _exchange_blocking(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        idle = self._blocking_idle
        try:
            link = idle.pop()
        except IndexError:
            link = self._open_blocking()
        replies = link.exchange(b"".join(map(hiredis.pack_command, commands)), len(commands))
        if link.broken:  # READONLY: every idle connection leads to the old primary
            while idle:
                with contextlib.suppress(IndexError):
                    idle.pop().close()
        else:
            idle.append(link)
        return replies

    def _open_blocking(self) -> BlockingLink:
        pool = self._blocking_pool
        if pool is None:
            pool = self._blocking_pool = BlockingPool.from_url(
                self.opts.client_url,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
                # Each read waits at most this long; run_blocking bounds the whole call.
                socket_timeout=self.opts.op_timeout,
                socket_keepalive=True,
                driver_info=_driver_info(),
                # run_blocking retries, within op_timeout; redis-py's own would add seconds.
                retry=BlockingRetry(NoBackoff(), 0),
            )
        link = BlockingLink(cast("SyncConnection", pool.make_connection()))
        if not self._layout_checked:
            replies = link.exchange(
                b"".join(map(hiredis.pack_command, layout_commands(self.layout))), 2
            )
            check_layout_version(replies[-1], self.layout, self.opts.display_url)
            self._layout_checked = True
        return link

    @property
    def known(self) -> set[str]:
        """Queues seen so far, without asking the server."""
        return self._known

    def add_known(self, queues: Iterable[str]) -> None:
        # New sets rather than updates: a thread enqueueing through run_blocking may call
        # this while the loop's thread iterates them.
        queues = set(queues)
        self.registered = self.registered | queues
        self._known = self._known | queues

    async def refresh_known(self, max_age: float = QUEUES_MAX_AGE) -> set[str]:
        if time.monotonic() - self._known_at >= max_age:
            # On the hot path's connections, like every command made while the store runs.
            [members] = await self.run([("SMEMBERS", self.layout.queues_key)])
            self._known = set(cast("list[str]", members)) | self.registered
            self._known_at = time.monotonic()
        return self._known

    async def queue_names(self, queues: Sequence[str] | None) -> list[str]:
        if queues is not None:
            return list(dict.fromkeys(queues))
        return sorted(await self.refresh_known())

    async def locate(self, ids: Iterable[str]) -> dict[str, str]:
        """The queue of each id, from this process's claims or else by asking each queue."""
        found: dict[str, str] = {}
        unknown: list[str] = []
        for job_id in ids:
            queue = self.where.get(job_id)
            if queue is None:
                unknown.append(job_id)
            else:
                found[job_id] = queue
        if unknown:
            names = sorted(await self.refresh_known(0.0))
            probes = [(i, q) for i in unknown for q in names]
            if probes:
                layout = self.layout
                hits = await self.run([("EXISTS", layout.queue(q).job + i) for i, q in probes])
                for (job_id, queue), hit in zip(probes, hits, strict=True):
                    if hit:
                        found.setdefault(job_id, queue)
        return found

    async def now(self) -> float:
        async with self.guard("reading the clock"):
            [(seconds, micros)] = await self.run([("TIME",)])
        return int(seconds) + int(micros) / 1_000_000

    def _wait_keys(self, queues: Sequence[str] | None) -> list[str]:
        # Serving all queues, the registry's list too, so a brand-new queue wakes us.
        layout = self.layout
        if queues is None:
            return [layout.queue(q).wake for q in sorted(self._known)] + [layout.wake_key]
        return [layout.queue(q).wake for q in dict.fromkeys(queues)]

    def _woken(self, reply: Any) -> None:
        if reply is not None and reply[0] == self.layout.wake_key:
            # A new queue was registered: the next claim must see it, however fresh the
            # cached list of queues is.
            self._known_at = -math.inf

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        """Block in ``BLPOP`` on the queues' wake-up lists. Writers push a token per change,
        so a change made just before we block is still waiting for us when we do."""
        if timeout > 0 and self._lean is not None:  # a closed store has nothing to wait for
            await self.wait_then_run(queues, timeout, [])

    async def wait_then_run(
        self,
        queues: Sequence[str] | None,
        timeout: float,
        commands: list[tuple[Any, ...]],
        waiter: tuple[str, asyncio.Event] | None = None,
    ) -> list[Any] | None:
        """``wait``, with ``commands`` pipelined behind the ``BLPOP``: Redis runs them the
        moment it returns, on the same connection, so a wake-up and the work it leads to
        cost one round trip instead of two. Returns their replies, or ``None`` when Redis
        could not be reached (after a short pause, so that a worker does not spin).

        With commands, the wait must not be cancelled half-way (they may have run, and their
        replies would be lost): ``waiter`` (the worker's id and its stop event) ends it
        instead, by pushing the worker's own list when the event is set, or when the time
        is up. Redis checks a blocked command's timeout only as often as its ``hz``
        (10 a second by default), so left to itself a wait for a job due in 5 ms ends up to
        100 ms late; a worker then starts delayed jobs late, and claims a rate-limited
        task's next job ten times a second whatever its rate."""
        keys = self._wait_keys(queues)
        poke: asyncio.Future[None] | None = None
        if waiter is not None:
            own = self.layout.waiter(waiter[0])
            keys.append(own)
            poke = asyncio.ensure_future(self._poke_when(waiter[1], own, timeout))
        # BLPOP reads 0 as "forever" and rounds to milliseconds.
        seconds = max(timeout, 0.01)
        try:
            async with asyncio.timeout(seconds + self.opts.op_timeout), self._slots:
                replies = await self.run([("BLPOP", *keys, f"{seconds:.3f}"), *commands])
        except UNREACHABLE:
            await asyncio.sleep(min(timeout, WAIT_ERROR_PAUSE))
            return None
        except ResponseError as exc:  # a command behind the wait refused (see refusal)
            refused = self.refused("waiting for work", exc)
            if refused is None:
                raise
            raise refused from exc
        finally:
            if poke is not None:
                poke.cancel()
        self._woken(replies[0])
        return replies[1:]

    async def _poke_when(self, stop: asyncio.Event, own: str, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout)
        # Expires on its own in case the wait had already returned for another reason.
        with contextlib.suppress(StoreUnavailable):
            async with self.guard("waking a waiting worker"):
                await self.run([("LPUSH", own, "1"), ("PEXPIRE", own, 60_000)])
