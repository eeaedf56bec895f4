"""Tasks and worker entry point shared by the offload benchmarks (imported by subprocesses)."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time

from offload import Offload, Worker
from offload.eventloop import new_event_loop

jobs = Offload(os.environ.get("OFFLOAD_URL"), embedded_worker=False)


@jobs.task(retries=0)
async def noop() -> None:
    return None


@jobs.task(retries=0)
async def sleep10ms() -> float:
    """Returns when it finished (wall clock), which the I/O figure reads back."""
    await asyncio.sleep(0.01)
    return time.time()


async def _report_rss(path: str, worker: Worker) -> None:
    """Append (succeeded jobs, max RSS in KiB) every 0.5 s, for the memory-flatness check."""
    with open(path, "a") as out:  # noqa: ASYNC230 - a tiny append-only log in a benchmark
        while True:
            await asyncio.sleep(0.5)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out.write(f"{worker.stats['succeeded']} {rss}\n")
            out.flush()


async def work(concurrency: int, rss_path: str | None) -> None:
    async with jobs:
        worker = Worker(jobs, concurrency=concurrency)
        reporter = None
        if rss_path:
            reporter = asyncio.create_task(_report_rss(rss_path, worker))
        started = time.process_time()
        await worker.run()
        if reporter is not None:
            reporter.cancel()
        cpu = time.process_time() - started
        print(f"{worker.stats['succeeded']} {cpu}", flush=True)


if __name__ == "__main__":
    # The loop `offload worker` runs on (precise timers), so these workers stand in for it.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(work(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
