"""Dramatiq on its Redis broker: `dramatiq … --processes 2 --threads 32`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers import recorder
from benchmarks.peers.common import CONCURRENCY, SLEEP, WORKERS, Kind, SyncPeer, bin_argv, redis_url

broker = RedisBroker(url=redis_url())  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(t: float) -> None:
    recorder.hit(t)


@dramatiq.actor
def sleep(t: float) -> None:
    time.sleep(SLEEP)
    recorder.hit(t)


ACTORS: dict[str, Any] = {"noop": noop, "sleep": sleep}


class Adapter(SyncPeer):
    name = "dramatiq"
    package = "dramatiq"
    settings: ClassVar[str] = (
        f"`dramatiq benchmarks.peers.lib_dramatiq --processes {WORKERS} --threads "
        f"{CONCURRENCY}` (a supervisor and {WORKERS} worker processes); default middleware "
        "(retries, time limit, age limit, callbacks, pipelines)"
    )
    batch_api = "none (`group(...).run()` sends one message at a time): one by one"
    delivery = "at-least-once (acks after running); no results (Results middleware is opt-in)"

    def worker_commands(self) -> list[list[str]]:
        return [
            bin_argv(
                "dramatiq",
                "benchmarks.peers.lib_dramatiq",
                "--processes",
                str(WORKERS),
                "--threads",
                str(CONCURRENCY),
            )
        ]

    def enqueue(self, kind: Kind, t: float) -> None:
        ACTORS[kind].send(t)

    def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        batch = dramatiq.group(ACTORS[kind].message(t) for t in ts)  # type: ignore[no-untyped-call]
        batch.run()  # type: ignore[no-untyped-call]
