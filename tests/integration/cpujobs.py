"""cpu_bound tasks for the process pool tests; pool processes import this module by name.

The app's store is replaced by each test (``jobs.store = ...``); a pool process only looks the
tasks up and never opens it. Run as ``python -m tests.integration.cpujobs URL``, it is a worker
process of its own, for the test that kills one outright.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from offload import JobContext, Offload, Worker

jobs = Offload("memory://", embedded_worker=False)
log = logging.getLogger("tests.cpujobs")


@jobs.task(cpu_bound=True, retries=0)
def square(n: int) -> int:
    return n * n


def cube(n: int) -> int:
    """Registered by a test on an app of its own (a factory's way): the function is at module
    level here, the task is not."""
    return n * n * n


@jobs.task(cpu_bound=True, retries=0)
def die(how: str) -> None:
    if how == "exit":
        os._exit(1)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)


@jobs.task(cpu_bound=True, retries=1, backoff=0)
def die_once(ctx: JobContext) -> int:
    if ctx.attempt == 1:
        os._exit(3)
    return ctx.attempt


@jobs.task(cpu_bound=True, retries=2)
def unencodable() -> Any:
    return object()


@jobs.task(cpu_bound=True, retries=0)
def stall(seconds: float, pid_file: str = "") -> float:
    """Sleeps in its process; writes the process id first, for a test to watch it."""
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


@jobs.task(cpu_bound=True, retries=0)
def started() -> float:
    """When its body began, by the wall clock the store's times use too."""
    return time.time()


@jobs.task(cpu_bound=True, retries=0)
def report(ctx: JobContext, n: int) -> dict[str, str | None]:
    # A sync body has no loop of its own to await the report on.
    asyncio.run(ctx.progress(0.5, f"half of {n}"))
    log.warning("crunching %d", n)
    try:
        raise ValueError("a handled error")
    except ValueError:
        log.exception("logged with its traceback")
    return {"request_id": ctx.meta.get("request_id"), "job_id": ctx.job_id}


async def work(url: str) -> None:
    jobs.store = Offload(url, embedded_worker=False).store
    async with jobs:
        await Worker(jobs, concurrency=2, processes=1, lease=5).run()


if __name__ == "__main__":
    asyncio.run(work(sys.argv[1]))
