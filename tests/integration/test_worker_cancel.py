"""The worker acts on a store's cancel signals (``CancelSignals``) as on the heartbeat's
report, at once: a running job's task is cancelled, and a job it claimed ahead and has not
started goes back, ending cancelled, while the job before it runs on. The lease is 30 s,
so the heartbeat (every 10 s) plays no part."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offload import Job, JobState, Offload, Worker

LEASE = 30.0
# Far under the heartbeat's 10 s; the latency itself is benchmarks/cancel_bench.py's.
BOUND = 2.5


@pytest.fixture(params=["memory", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def jobs(db_url: str) -> AsyncIterator[Offload]:
    app = Offload(db_url, embedded_worker=False)
    async with app:
        yield app


async def _until(job: Job[None], state: JobState, limit: float) -> JobState:
    deadline = time.monotonic() + limit
    while True:
        await job.refresh()
        if job.state is state or time.monotonic() > deadline:
            return job.state
        await asyncio.sleep(0.01)


class TestCancelSignals:
    async def test_a_running_job_is_cancelled_before_any_heartbeat(self, jobs: Offload) -> None:
        """Its task is cancelled and the job ends cancelled, well within the 10 s the
        heartbeat would take."""
        started = asyncio.Event()

        @jobs.task(retries=0)
        async def endless() -> None:
            started.set()
            await asyncio.sleep(30)

        w = Worker(jobs, install_signals=False, lease=LEASE)
        runner = asyncio.create_task(w.run())
        try:
            await w.started.wait()
            job = await endless.enqueue()
            await asyncio.wait_for(started.wait(), 5)
            assert await job.cancel()
            assert JobState.CANCELLED == await _until(job, JobState.CANCELLED, BOUND)
            assert 1 == w.stats["cancelled"]
        finally:
            w.stop()
            await asyncio.wait_for(runner, 10)

    async def test_a_job_claimed_ahead_is_given_back_cancelled(self, jobs: Offload) -> None:
        """A job waiting in the worker's buffer when its cancellation comes ends cancelled
        without running, and the running job before it is left alone."""
        gate = asyncio.Event()
        ran: list[int] = []

        @jobs.task(retries=0)
        async def blocking(n: int) -> None:
            ran.append(n)
            await gate.wait()

        first = await blocking.enqueue(1)
        second = await blocking.enqueue(2)
        w = Worker(jobs, concurrency=1, prefetch=1, install_signals=False, lease=LEASE)
        runner = asyncio.create_task(w.run())
        try:
            for _ in range(500):  # the claim that fills the buffer is under way
                if len(w._ready) == 1:
                    break
                await asyncio.sleep(0.01)
            assert [second.id] == [r.id for r in w._ready]
            assert await second.cancel()
            assert JobState.CANCELLED == await _until(second, JobState.CANCELLED, BOUND)
            assert JobState.RUNNING == (await first.refresh()).state
            gate.set()
            assert JobState.SUCCEEDED == await _until(first, JobState.SUCCEEDED, BOUND)
            assert [1] == ran
        finally:
            gate.set()
            w.stop()
            await asyncio.wait_for(runner, 10)
