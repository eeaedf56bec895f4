"""streaq on Redis streams: `streaq run benchmarks.peers.lib_streaq:worker --workers 2`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

from streaq import Worker

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

worker: Worker[Any] = Worker(redis_url=redis_url(), concurrency=CONCURRENCY)


@worker.task
async def noop(t: float) -> None:
    recorder.hit(t)


@worker.task
async def sleep(t: float) -> None:
    await asyncio.sleep(SLEEP)
    recorder.hit(t)


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep}


class Adapter(AsyncPeer):
    name = "streaq"
    package = "streaq"
    settings: ClassVar[str] = (
        f"`streaq run benchmarks.peers.lib_streaq:worker --workers {WORKERS}`, "
        f"`Worker(concurrency={CONCURRENCY})`; defaults otherwise (prefetch = concurrency, "
        "pickle, an INFO log line per task)"
    )
    batch_api = "`worker.enqueue_many([...])` (one pipeline), 1,000 a call"
    delivery = "at-least-once (stream acks after running, idle tasks reclaimed); results kept 5 min"

    def __init__(self) -> None:
        self.stack = AsyncExitStack()

    def worker_commands(self) -> list[list[str]]:
        return [
            bin_argv(
                "streaq", "run", "benchmarks.peers.lib_streaq:worker", "--workers", str(WORKERS)
            )
        ]

    async def open(self) -> None:
        await self.stack.enter_async_context(worker)

    async def enqueue(self, kind: Kind, t: float) -> None:
        await TASKS[kind].enqueue(t)

    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        task = TASKS[kind]
        await worker.enqueue_many([task.enqueue(t) for t in ts])

    async def close(self) -> None:
        await self.stack.aclose()
