"""A job's reads from code that is not async (``result_sync``, ``status_sync``,
``refresh_sync``, ``cancel_sync``): a ``def`` endpoint or a script waits for a result with no
event loop of its own, and meets the same errors as ``await job.result()``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from offload import JobCancelled, JobFailed, JobState, Offload, ResultTimeout
from offload.jobs import Job
from tests.integration.test_enqueue_sync import app_url as app_url  # the fixture, by name

ROOT = Path(__file__).resolve().parents[2]


def build(url: str) -> tuple[Offload, object, object]:
    jobs = Offload(url)  # with its embedded worker: the jobs run while the caller waits

    @jobs.task(name="tests.double")
    async def double(x: int) -> int:
        return 2 * x

    @jobs.task(name="tests.broken", retries=0)
    async def broken() -> None:
        raise ValueError("no good")

    return jobs, double, broken


async def test_a_def_endpoint_waits_for_a_result(app_url: str) -> None:
    jobs, double, broken = build(app_url)
    app = FastAPI(lifespan=jobs.lifespan)

    @app.post("/double/{x}")
    def run(x: int) -> dict[str, object]:  # a def endpoint: FastAPI runs it in a thread
        job: Job[int] = double.enqueue_sync(x)  # type: ignore[attr-defined]
        return {"result": job.result_sync(timeout=20), "state": job.status_sync().value}

    @app.post("/broken")
    def fail() -> dict[str, str]:
        job: Job[None] = broken.enqueue_sync()  # type: ignore[attr-defined]
        try:
            job.result_sync(timeout=20)
        except JobFailed as exc:
            return {"error": f"{exc.error_type}: {exc.error_message}"}
        return {"error": ""}

    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        answer = (await client.post("/double/21")).json()
        assert {"result": 42, "state": "succeeded"} == answer
        assert {"error": "ValueError: no good"} == (await client.post("/broken")).json()


async def test_timeouts_cancels_and_the_loops_own_thread(app_url: str) -> None:
    jobs = Offload(app_url, embedded_worker=False)

    @jobs.task(name="tests.never_run")
    async def never_run() -> None:
        return None

    async with jobs:
        job = await never_run.options(delay=3600).enqueue()
        with pytest.raises(ResultTimeout, match="still queued"):
            await asyncio.to_thread(job.result_sync, 0.2)
        assert JobState.QUEUED is await asyncio.to_thread(job.status_sync)
        assert await asyncio.to_thread(job.cancel_sync)
        with pytest.raises(JobCancelled):
            await asyncio.to_thread(job.result_sync, 1)
        assert JobState.CANCELLED is (await asyncio.to_thread(job.refresh_sync)).state
        with pytest.raises(RuntimeError, match="cannot run on an event loop's thread"):
            job.status_sync()


def test_a_script_with_no_event_loop_reads_its_result(app_url: str, tmp_path: Path) -> None:
    script = f"""
from offload import Offload

jobs = Offload({app_url!r})

@jobs.task(name="tests.triple")
async def triple(x: int) -> int:
    return 3 * x

job = triple.enqueue_sync(5)
print(job.status_sync().value)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    assert "queued" == done.stdout.strip()
