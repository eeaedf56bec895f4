"""Tasks for the graceful-stop tests; imported by the worker processes they start."""

from __future__ import annotations

import asyncio
import os

from offload import Offload

jobs = Offload(os.environ.get("OFFLOAD_URL"), embedded_worker=False)


@jobs.task(retries=0)
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds
