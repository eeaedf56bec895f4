"""Huey on Redis: two `huey_consumer -w 32 -k thread` processes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from huey import RedisHuey  # type: ignore[import-untyped]

from benchmarks.peers import recorder
from benchmarks.peers.common import CONCURRENCY, SLEEP, WORKERS, Kind, SyncPeer, bin_argv, redis_url

huey = RedisHuey("peers", url=redis_url())


@huey.task()  # type: ignore[untyped-decorator]
def noop(t: float) -> None:
    recorder.hit(t)


@huey.task()  # type: ignore[untyped-decorator]
def sleep(t: float) -> None:
    time.sleep(SLEEP)
    recorder.hit(t)


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep}


class Adapter(SyncPeer):
    name = "huey"
    package = "huey"
    settings: ClassVar[str] = (
        f"{WORKERS} × `huey_consumer benchmarks.peers.lib_huey.huey --workers {CONCURRENCY} "
        "--worker-type thread`; defaults otherwise (`RedisHuey`, blocking pop)"
    )
    batch_api = "none: one by one"
    delivery = "at-most-once (a popped task is gone); results kept unless None"

    def worker_commands(self) -> list[list[str]]:
        argv = bin_argv(
            "huey_consumer",
            "benchmarks.peers.lib_huey.huey",
            "--workers",
            str(CONCURRENCY),
            "--worker-type",
            "thread",
        )
        return [argv] * WORKERS

    def enqueue(self, kind: Kind, t: float) -> None:
        TASKS[kind](t)

    def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        task = TASKS[kind]
        for t in ts:
            task(t)
