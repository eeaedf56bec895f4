"""RQ: two default workers (`Worker`, a forked child per job), one job at a time each.

RQ has no concurrency setting: a worker runs one job at a time. Run as
`python -m benchmarks.peers.lib_rq`, which is `rq worker` with RQ's default `Worker` after
taking the recorder slot, so that the children forked per job write into it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from redis import Redis
from rq import Queue, Worker

from benchmarks.peers import recorder
from benchmarks.peers.common import SLEEP, WORKERS, Kind, SyncPeer, module_argv, redis_url


def noop(t: float) -> None:
    recorder.hit(t)


def sleep(t: float) -> None:
    time.sleep(SLEEP)
    recorder.hit(t)


TASKS = {"noop": noop, "sleep": sleep}


class Adapter(SyncPeer):
    name = "rq"
    package = "rq"
    settings: ClassVar[str] = (
        f"{WORKERS} × RQ's default `Worker` (forks a child per job; one job at a time per "
        "worker: RQ has no concurrency setting), an INFO log line per job"
    )
    batch_api = "`queue.enqueue_many([Queue.prepare_data(...)])` (one pipeline), 1,000 a call"
    delivery = "at-most-once (a job whose worker died is marked failed, not re-run); results 500 s"
    slots = WORKERS
    # A fork per job makes RQ the slowest by far; 2,000 jobs give its rates in minutes.
    max_jobs = 2_000
    inherit_record = True

    def worker_commands(self) -> list[list[str]]:
        return [module_argv("benchmarks.peers.lib_rq")] * WORKERS

    def open(self) -> None:
        self.queue = Queue(connection=Redis.from_url(redis_url()))

    def enqueue(self, kind: Kind, t: float) -> None:
        self.queue.enqueue(TASKS[kind], t)

    def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        fn = TASKS[kind]
        self.queue.enqueue_many([Queue.prepare_data(fn, (t,)) for t in ts])

    def close(self) -> None:
        self.queue.connection.close()


if __name__ == "__main__":
    recorder.claim()
    connection = Redis.from_url(redis_url())
    Worker([Queue(connection=connection)], connection=connection).work()
