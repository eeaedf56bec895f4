"""The application the CLI tests serve with ``offload worker tests.acceptance.clijobs:jobs``.

Every task appends a line to a file named by its first argument when it starts (and another
when it ends), so a test in another process can count runs and see where each one got to.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from offload import AsyncTask, JobContext, Offload, SyncTask


def record(path: str, line: str) -> None:
    with Path(path).open("a") as fh:
        fh.write(line + "\n")
        fh.flush()


@dataclass(frozen=True)
class CliJobs:
    app: Offload
    nap: AsyncTask[[str, float], str]
    block: SyncTask[[str, float], str]
    broken: AsyncTask[[str], None]


def build(url: str | None = None) -> CliJobs:
    """A fresh app with the tasks; tests enqueue through one built on their store URL."""
    app = Offload(url, embedded_worker=False)

    @app.task(name="nap", retries=3)
    async def nap(ctx: JobContext, log: str, seconds: float) -> str:
        record(log, f"start {ctx.job_id} {ctx.attempt}")
        await asyncio.sleep(seconds)
        record(log, f"done {ctx.job_id} {ctx.attempt}")
        return f"slept {seconds}"

    @app.task(name="block", retries=3)
    def block(ctx: JobContext, log: str, seconds: float) -> str:
        # Sync and uninterruptible: a thread cannot be cancelled, only abandoned.
        record(log, f"start {ctx.job_id} {ctx.attempt}")
        time.sleep(seconds)
        record(log, f"done {ctx.job_id} {ctx.attempt}")
        return f"blocked {seconds}"

    @app.task(name="broken", retries=0)
    async def broken(log: str) -> None:
        record(log, "start")
        raise RuntimeError("broken on purpose")

    return CliJobs(app, nap, block, broken)


jobs = build().app
