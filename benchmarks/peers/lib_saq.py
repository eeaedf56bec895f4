"""SAQ on Redis: `saq benchmarks.peers.lib_saq.settings --workers 2`, concurrency 32."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from saq import Queue

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

queue = Queue.from_url(redis_url())


async def noop(ctx: Any, *, t: float) -> None:
    recorder.hit(t)


async def sleep(ctx: Any, *, t: float) -> None:
    await asyncio.sleep(SLEEP)
    recorder.hit(t)


settings = {"queue": queue, "functions": [noop, sleep], "concurrency": CONCURRENCY}


class Adapter(AsyncPeer):
    name = "saq"
    package = "saq"
    settings: ClassVar[str] = (
        f"`saq benchmarks.peers.lib_saq.settings --workers {WORKERS}` (a parent and "
        f"{WORKERS} worker processes), `concurrency={CONCURRENCY}`; defaults otherwise"
    )
    batch_api = "none: 1,000 `queue.enqueue()` calls at once, 100 in flight (redis-py's pool size)"
    # A job whose worker died is swept and retried only while attempts < `retries`, which
    # defaults to 1: by default it ends aborted, not re-run.
    delivery = "at-most-once (`retries=1`: a swept job is aborted); results kept 600 s"

    def worker_commands(self) -> list[list[str]]:
        return [bin_argv("saq", "benchmarks.peers.lib_saq.settings", "--workers", str(WORKERS))]

    async def open(self) -> None:
        await queue.connect()

    async def enqueue(self, kind: Kind, t: float) -> None:
        await queue.enqueue(kind, t=t)

    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        await concurrently([functools.partial(queue.enqueue, kind, t=t) for t in ts])

    async def close(self) -> None:
        await queue.disconnect()
