"""Tasks for the multi-process tests; imported by worker and producer subprocesses."""

from __future__ import annotations

import asyncio
import os
import sys

from offload import Offload, Worker
from offload.observers import JobObserver

jobs = Offload(os.environ.get("OFFLOAD_URL"), embedded_worker=False)
RUNS_DIR = os.environ.get("RUNS_DIR", ".")
_log = None


def _record(n: int) -> None:
    global _log
    if _log is None:
        _log = open(os.path.join(RUNS_DIR, f"runs-{os.getpid()}.txt"), "a")  # noqa: SIM115
    _log.write(f"{n}\n")
    _log.flush()


@jobs.task(retries=5, backoff=0.01)
async def count(n: int) -> int:
    _record(n)
    return n


@jobs.task(cpu_bound=True, retries=0)
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def produce(total: int, batch: int) -> None:
    async with jobs:
        for start in range(0, total, batch):
            await jobs.enqueue_many([count.prepare(i) for i in range(start, start + batch)])


class _Ready(JobObserver):
    """Marks this worker as started (its signal handlers are in place from then on), so a
    test can wait for every worker before it produces, and stop none that is still starting."""

    def worker_started(self, worker_id: str) -> None:
        with open(os.path.join(RUNS_DIR, f"ready-{os.getpid()}"), "w"):
            pass


async def work(concurrency: int) -> None:
    jobs.observers.append(_Ready())
    async with jobs:
        await Worker(jobs, concurrency=concurrency, lease=5).run()


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        asyncio.run(produce(int(sys.argv[2]), int(sys.argv[3])))
    else:
        asyncio.run(work(int(sys.argv[2])))
