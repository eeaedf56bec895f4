"""taskiq with taskiq-redis's stream broker: `taskiq worker … --workers 2 --max-async-tasks 32`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from taskiq_redis import RedisStreamBroker

from benchmarks.peers import recorder
from benchmarks.peers.common import (
    CONCURRENCY,
    SLEEP,
    WORKERS,
    AsyncPeer,
    Kind,
    bin_argv,
    concurrently,
    redis_url,
)

broker = RedisStreamBroker(url=redis_url())


@broker.task
async def noop(t: float) -> None:
    recorder.hit(t)


@broker.task
async def sleep(t: float) -> None:
    await asyncio.sleep(SLEEP)
    recorder.hit(t)


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep}


class Adapter(AsyncPeer):
    name = "taskiq"
    package = "taskiq"
    settings: ClassVar[str] = (
        f"`taskiq worker benchmarks.peers.lib_taskiq:broker --workers {WORKERS} "
        f"--max-async-tasks {CONCURRENCY}` (a manager and {WORKERS} worker processes), "
        "taskiq-redis `RedisStreamBroker` with its defaults (XREADGROUP 100 at a time)"
    )
    batch_api = "none: 1,000 `kiq()` calls at once, 100 in flight (redis-py's pool size)"
    delivery = (
        "at-least-once (acks once the result is saved; unacked messages reclaimed after "
        "10 min); no results (no backend set)"
    )

    def worker_commands(self) -> list[list[str]]:
        return [
            bin_argv(
                "taskiq",
                "worker",
                "benchmarks.peers.lib_taskiq:broker",
                "--workers",
                str(WORKERS),
                "--max-async-tasks",
                str(CONCURRENCY),
            )
        ]

    async def open(self) -> None:
        await broker.startup()

    async def enqueue(self, kind: Kind, t: float) -> None:
        await TASKS[kind].kiq(t)

    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        task = TASKS[kind]
        await concurrently([functools.partial(task.kiq, t) for t in ts])

    async def reset(self) -> None:
        # The consumer group lives in Redis; startup declares it again after FLUSHDB.
        await broker.shutdown()
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()
