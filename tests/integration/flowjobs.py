"""Limited tasks for the flow-control tests' ``offload worker`` processes.

Each run appends ``S <task> <n> <pid> <time>`` when it starts and ``E ...`` when it ends to
``$FLOW_RUNS`` with one ``os.write`` (a killed worker loses no line it wrote), so the tests
check the limits from the recorded times, not from the store's counters.
"""

from __future__ import annotations

import asyncio
import os
import time

from offload import Offload

jobs = Offload(os.environ.get("OFFLOAD_URL", "memory://"), embedded_worker=False)
_path = os.environ.get("FLOW_RUNS")
_fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _path else -1
RUN_SECONDS = 0.05


def _mark(kind: str, task: str, n: int) -> None:
    os.write(_fd, f"{kind} {task} {n} {os.getpid()} {time.time():.6f}\n".encode())


@jobs.task(name="flow.rated", rate_limit="20/s", retries=0)
async def rated(n: int) -> None:
    _mark("S", "rated", n)
    _mark("E", "rated", n)


@jobs.task(name="flow.paired", concurrency=2, retries=5)
async def paired(n: int) -> None:
    _mark("S", "paired", n)
    await asyncio.sleep(RUN_SECONDS)
    _mark("E", "paired", n)


@jobs.task(name="flow.per_user", concurrency=1, concurrency_key=lambda user, n: user)
async def per_user(user: str, n: int) -> None:
    _mark("S", f"user-{user}", n)
    await asyncio.sleep(RUN_SECONDS)
    _mark("E", f"user-{user}", n)
