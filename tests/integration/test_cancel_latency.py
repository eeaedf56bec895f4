"""A cancel of a running job takes effect at once in a worker of another process, on SQLite,
Redis and PostgreSQL: the job's task is cancelled and the job ends ``cancelled`` long
before the worker's next heartbeat, which with a 30 s lease comes 10 s after the last.

So the test proves the store's cancel signal (``CancelSignals``), not the heartbeat. The
latency itself is measured by ``benchmarks/cancel_bench.py``; the bound here only says
that the fast path was taken.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from offload import JobState, Offload
from offload.jobs import Job
from tests.integration import stopjobs

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.stopjobs:jobs"
# The heartbeat renews (and reads cancel flags) every third of this: 10 s.
LEASE = 30.0
# Each job would sleep this long if nobody stopped it.
NAP = 30.0
CANCELS = 3
# Far under the 10 s heartbeat, far over the signal's latency on a loaded machine.
BOUND = 3.0
# Process start-up on a loaded 2-core machine; only waited out when something is broken.
START_TIMEOUT = 40.0


def _tail(log: Path) -> str:
    return log.read_text()[-4000:]


async def _until_running(job: Job[float], proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if (await job.refresh()).state is JobState.RUNNING:
            return
        assert proc.returncode is None, _tail(log)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job.id} never ran\n{_tail(log)}")


async def _until_finished(job: Job[float], limit: float) -> tuple[JobState, float]:
    began = time.monotonic()
    while True:
        state = (await job.refresh()).state
        took = time.monotonic() - began
        if state.finished or took > limit:
            return state, took
        await asyncio.sleep(0.01)


@pytest.mark.timeout(180)
async def test_a_running_job_ends_cancelled_well_before_the_heartbeat(
    store_url: str, tmp_path: Path
) -> None:
    """Three jobs, one after another, each running in a worker process with a 30 s lease
    and cancelled by ``job.cancel()``: each ends cancelled within 3 s of the call."""
    log = tmp_path / "worker.log"
    app = Offload(store_url, embedded_worker=False)
    app.tasks = stopjobs.jobs.tasks
    await app.open()
    env = {k: v for k, v in os.environ.items() if k != "OFFLOAD_URL"}
    args = ["--url", store_url, "--lease", str(LEASE), "--concurrency", "4", "--json-logs"]
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "offload.cli", "worker", APP, *args],
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    try:
        outcomes = []
        for _ in range(CANCELS):
            (job,) = await app.enqueue_many([stopjobs.nap.prepare(NAP)])
            await _until_running(job, proc, log)
            # Past the worker's start, so the claim is settled and the task asleep.
            await asyncio.sleep(0.2)
            assert await job.cancel()
            outcomes.append(await _until_finished(job, BOUND))
        assert [JobState.CANCELLED] * CANCELS == [state for state, _ in outcomes], (
            outcomes,
            _tail(log),
        )
        assert all(took < BOUND for _, took in outcomes), outcomes
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await app.close()
