"""offload on its Redis store: `offload worker --concurrency 32`, two processes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from benchmarks.peers import recorder
from benchmarks.peers.common import (
    CONCURRENCY,
    SLEEP,
    WORKERS,
    AsyncPeer,
    Kind,
    bin_argv,
    redis_url,
)
from offload import Offload


async def noop(t: float) -> None:
    recorder.hit(t)


async def sleep(t: float) -> None:
    await asyncio.sleep(SLEEP)
    recorder.hit(t)


def make_app() -> tuple[Offload, dict[str, Any]]:
    """An app with both tasks registered under their module-level names."""
    app = Offload(redis_url(), embedded_worker=False)
    return app, {"noop": app.task(noop), "sleep": app.task(sleep)}


jobs, _ = make_app()  # what `offload worker benchmarks.peers.lib_offload:jobs` serves


class Adapter(AsyncPeer):
    name = "offload"
    package = "offload"
    settings: ClassVar[str] = (
        f"{WORKERS} × `offload worker --concurrency {CONCURRENCY}`; "
        "defaults otherwise (3 retries, lease 30 s, adaptive prefetch, JSON logs at INFO: "
        "a line per failed or retried attempt, successes at DEBUG)"
    )
    batch_api = "`jobs.enqueue_many([task.prepare(...)])`, 1,000 a call"
    delivery = "at-least-once; results kept"

    def __init__(self) -> None:
        self.app, self.tasks = make_app()

    def worker_commands(self) -> list[list[str]]:
        argv = bin_argv(
            "offload",
            "worker",
            "benchmarks.peers.lib_offload:jobs",
            "--concurrency",
            str(CONCURRENCY),
            "--url",
            redis_url(),
        )
        return [argv] * WORKERS

    async def open(self) -> None:
        await self.app.open()

    async def enqueue(self, kind: Kind, t: float) -> None:
        await self.tasks[kind].enqueue(t)

    def enqueue_blocking(self, kind: Kind, t: float) -> None:
        """The same call from code that is not async (see ``run.blocking_one_by_one``)."""
        self.tasks[kind].enqueue_sync(t)

    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        task = self.tasks[kind]
        await self.app.enqueue_many([task.prepare(t) for t in ts])

    async def reset(self) -> None:
        # Each step starts from a fresh app and connections, as after a restart.
        await self.app.close()
        self.app, self.tasks = make_app()
        await self.app.open()

    async def close(self) -> None:
        await self.app.close()
