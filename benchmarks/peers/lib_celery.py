"""Celery on its Redis transport, threads pool: `celery worker --pool threads --concurrency 32`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from celery import Celery, group  # type: ignore[import-untyped]

from benchmarks.peers import recorder
from benchmarks.peers.common import CONCURRENCY, SLEEP, WORKERS, Kind, SyncPeer, bin_argv, redis_url

app = Celery("peers", broker=redis_url())  # no result backend: Celery's default


@app.task  # type: ignore[untyped-decorator]
def noop(t: float) -> None:
    recorder.hit(t)


@app.task  # type: ignore[untyped-decorator]
def sleep(t: float) -> None:
    time.sleep(SLEEP)
    recorder.hit(t)


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep}


class Adapter(SyncPeer):
    name = "celery"
    package = "celery"
    settings: ClassVar[str] = (
        f"{WORKERS} × `celery -A … worker --pool threads --concurrency {CONCURRENCY}`; "
        "defaults otherwise (prefetch multiplier 4, acks on receipt, no result backend, "
        "log level WARNING)"
    )
    batch_api = "`group(task.s(...) for ...).apply_async()`, 1,000 a call"
    delivery = "at-most-once (acks before running); no results unless a backend is set"

    def worker_commands(self) -> list[list[str]]:
        return [
            bin_argv(
                "celery",
                "-A",
                "benchmarks.peers.lib_celery:app",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(CONCURRENCY),
                "--hostname",
                f"w{i}@%h",
            )
            for i in range(WORKERS)
        ]

    def enqueue(self, kind: Kind, t: float) -> None:
        TASKS[kind].delay(t)

    def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        group(TASKS[kind].s(t) for t in ts).apply_async()

    def reset(self) -> None:
        # Kombu remembers per connection which queues it declared, but their bindings live
        # in Redis: after FLUSHDB declare them again, or messages would go nowhere.
        with app.connection_for_write() as conn:
            for queue in app.amqp.queues.values():
                queue(conn.default_channel).declare()
