"""How the Redis store meets faults: which errors mean the server is unreachable or refusing
writes, how a failing call retries (``Outage``), and the one timer that bounds every
operation by ``op_timeout`` (``Deadlines``; ``connection.Guard`` applies it).

Kept apart from ``connection.py`` so that the policy reads in one place, and so that the
connection module holds only the clients and what they carry.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# redis-py retries a command on a dropped connection this many times, backing off from 50 ms
# to at most 0.5 s: enough to ride out a restart of a few seconds within op_timeout.
RETRIES = 8
BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.5
# A refused connection (nothing listens at the address) is retried for this long only, not
# for the whole op_timeout: long enough for a server restarting on the spot, short enough
# that a request answers 503 promptly when Redis is down.
REFUSED_WINDOW = 1.0

T = TypeVar("T")

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
# Error replies by which a reachable server refuses writes for a while, by their first word;
# OOM and READONLY arrive as their own redis-py classes (see refusal).
_REFUSALS = {
    "MISCONF": "cannot write its snapshot to disk, and refuses writes until it can (see its log)",
    "NOREPLICAS": "has fewer replicas online than its min-replicas-to-write",
    "BUSY": "is busy running a script past its time limit",
    "MASTERDOWN": "is a replica that lost its primary",
}


def refusal(exc: BaseException) -> str | None:
    """Why the server refused, when ``exc`` is a refusal that passes (not a bug to raise)."""
    if isinstance(exc, OutOfMemoryError):
        return (
            "is out of memory: it reached maxmemory and refuses writes until memory is freed "
            "(purge finished jobs, shorten the retention, or raise maxmemory)"
        )
    if isinstance(exc, ReadOnlyError):
        return (
            "is a read-only replica (after a failover the connection still led to the old "
            "primary; the next operation connects afresh)"
        )
    if isinstance(exc, ResponseError):
        return _REFUSALS.get(str(exc).split(" ", 1)[0])
    return None


def is_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a refused connection (redis-py wraps the ``OSError`` it met)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _dropped(_error: Exception) -> None:
    """Retry hook, before each retry of the hot path: nothing to do, the failed connection
    was already dropped (tests count retries through it)."""


class Outage:
    """Whether the server is known to be down, and so how hard a failing call retries.

    A call that meets a failure retries with backoff, to ride out a dropped connection or a
    restart: up to ``RETRIES`` times within ``op_timeout``, and a refused connection only
    within ``REFUSED_WINDOW``. Once a call has given up, the outage is known: later calls
    make one attempt each (a refused connect costs a fraction of a millisecond) and fail at
    once, so that every request during an outage does not wait out the retries again. The
    first call that gets through ends it. Shared by the loop and by ``run_blocking``'s
    threads: one flag, written whole."""

    __slots__ = ("down",)

    def __init__(self) -> None:
        self.down = False

    def give_up(self, exc: BaseException, failures: int, elapsed: float, pause: float) -> bool:
        """Whether a call that failed ``failures + 1`` times in ``elapsed`` s stops here."""
        if self.down or failures >= RETRIES:
            return True
        return elapsed + pause >= REFUSED_WINDOW and is_refused(exc)

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, retried with backoff under this policy; the loop's calls and
        connects. (redis-py wraps socket errors in ConnectionError; a bare OSError is
        retried too, in case one slips through.)"""
        failures = 0
        began = 0.0  # read only on a failure: the hot path's calls mostly succeed at once
        while True:
            try:
                result = await attempt()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                now = time.monotonic()
                if not failures:
                    began = now
                pause = backoff(failures + 1)
                if self.give_up(exc, failures, now - began, pause):
                    raise
                failures += 1
                await _dropped(exc)
                await asyncio.sleep(pause)
                continue
            if self.down:
                self.down = False
            return result


def backoff(failures: int) -> float:
    """Backoff before retry ``failures`` (from 1): 50 ms, doubling, at most 0.5 s."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1)))


class Deadlines:
    """Cancels tasks that overran their deadline, with one timer for all of them.

    ``asyncio.timeout`` schedules and cancels a timer per operation; at thousands of
    operations a second the loop's heap fills with cancelled timers (one per operation in the
    last ``op_timeout`` seconds) and every operation pays for it. Here an operation only
    records its deadline; one timer, set for the earliest deadline in flight, fires at most
    once per expiry or per ``op_timeout``. Semantics match ``asyncio.timeout``: the task is
    cancelled, and the guard that owns the deadline turns that cancellation (and only that
    one, by ``Task.uncancel``) into a timeout.
    """

    def __init__(self) -> None:
        self.due: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        timer = self._timer
        # (A timer of another loop, one the store was used from before, would never fire.)
        if timer is None or self._loop is not loop:
            if timer is not None:
                timer.cancel()
            self._loop = loop
            self._timer = loop.call_at(when, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        earliest = math.inf
        for task, when in self.due.items():
            if when > now:
                earliest = min(earliest, when)
            elif task not in self.expired:
                self.expired.add(task)
                task.cancel()
        if earliest < math.inf:
            self.arm(loop, earliest)
