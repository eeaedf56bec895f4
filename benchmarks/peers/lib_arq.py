"""arq: two `arq benchmarks.peers.lib_arq.WorkerSettings` processes, `max_jobs = 32`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

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


async def noop(ctx: Any, t: float) -> None:
    recorder.hit(t)


async def sleep(ctx: Any, t: float) -> None:
    await asyncio.sleep(SLEEP)
    recorder.hit(t)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop, sleep]
    redis_settings = RedisSettings.from_dsn(redis_url())
    max_jobs = CONCURRENCY


class Adapter(AsyncPeer):
    name = "arq"
    package = "arq"
    settings: ClassVar[str] = (
        f"{WORKERS} × `arq benchmarks.peers.lib_arq.WorkerSettings`, `max_jobs = "
        f"{CONCURRENCY}`; defaults otherwise (poll delay 0.5 s, results kept 1 h, an INFO "
        "log line per job)"
    )
    batch_api = "none: 1,000 `enqueue_job()` calls at once, 100 in flight (redis-py's pool size)"
    delivery = "at-least-once (a job stays queued until done); results kept 1 h"

    pool: ArqRedis

    def worker_commands(self) -> list[list[str]]:
        return [bin_argv("arq", "benchmarks.peers.lib_arq.WorkerSettings")] * WORKERS

    async def open(self) -> None:
        self.pool = await create_pool(WorkerSettings.redis_settings)

    async def enqueue(self, kind: Kind, t: float) -> None:
        await self.pool.enqueue_job(kind, t)

    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        await concurrently([functools.partial(self.pool.enqueue_job, kind, t) for t in ts])

    async def close(self) -> None:
        await self.pool.aclose()
