"""The interface every library adapter implements, and the settings all of them share.

An adapter module (`lib_<name>.py`) defines the two benchmark tasks with the library's own
decorator, the worker command lines, and the producer calls. Worker processes import the same
module, so the tasks are registered under the same names on both sides.

Both tasks take one argument, the producer's `time.time()` just before the enqueue call, and
call `recorder.hit` with it: `noop` at once, `sleep` after sleeping 10 ms.
"""

from __future__ import annotations

import asyncio
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import ClassVar, Literal

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
CONCURRENCY = 32
SLEEP = 0.010
URL_ENV = "PEERS_REDIS_URL"

Kind = Literal["noop", "sleep"]


def redis_url() -> str:
    """The Redis database every library uses (a dedicated DB number, flushed between runs)."""
    return os.environ.get(URL_ENV, "redis://127.0.0.1:6379/15")


def module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this virtualenv's interpreter."""
    return [sys.executable, "-m", module, *args]


def bin_argv(script: str, *args: str) -> list[str]:
    """A console script installed in this virtualenv."""
    return [str(Path(sys.executable).parent / script), *args]


class Peer(ABC):
    """One library. Producers are either sync (`SyncPeer`) or asyncio (`AsyncPeer`)."""

    name: ClassVar[str]
    package: ClassVar[str]
    # How the library was run, in one line for the docs (every non-default setting named).
    settings: ClassVar[str]
    # What "enqueue batched" used.
    batch_api: ClassVar[str]
    # Delivery when a worker dies mid-job, and whether results are stored, by default.
    delivery: ClassVar[str]
    # Processes and concurrency actually run (x slots in total for the I/O ideal).
    slots: ClassVar[int] = WORKERS * CONCURRENCY
    # A cap on the jobs per figure, for a library too slow to run the full count in time.
    max_jobs: ClassVar[int | None] = None
    # Worker processes that fork a child per job and expect children to inherit the slot.
    inherit_record: ClassVar[bool] = False

    @classmethod
    def version(cls) -> str:
        return metadata.version(cls.package)

    @abstractmethod
    def worker_commands(self) -> list[list[str]]:
        """One argv per command to start; together they run every worker process."""


class SyncPeer(Peer):
    def open(self) -> None:
        """Connect the producer."""

    @abstractmethod
    def enqueue(self, kind: Kind, t: float) -> None: ...

    @abstractmethod
    def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None: ...

    def reset(self) -> None:
        """Called after each FLUSHDB, for libraries that keep routing state in Redis."""

    def close(self) -> None:
        """Disconnect the producer."""


class AsyncPeer(Peer):
    async def open(self) -> None:
        """Connect the producer."""

    @abstractmethod
    async def enqueue(self, kind: Kind, t: float) -> None: ...

    @abstractmethod
    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None: ...

    async def reset(self) -> None:
        """Called after each FLUSHDB, for libraries that keep routing state in Redis."""

    async def close(self) -> None:
        """Disconnect the producer."""


IN_FLIGHT = 100  # redis-py's default connection pool size (asyncio): more calls would fail


async def concurrently(calls: Sequence[Callable[[], Awaitable[object]]]) -> None:
    """The batch for libraries without a batch API: every call at once, `IN_FLIGHT` in flight."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(c) for c in calls))
