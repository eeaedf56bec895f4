"""An idle worker on Redis: its claim rides behind the BLPOP it waits in, and stopping it ends
the wait through its own wake-up list. Against the real server on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

import offload.worker
from offload import JobState, Offload, Worker
from offload.errors import StoreUnavailable
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable


@pytest.fixture
async def jobs() -> AsyncIterator[Offload]:
    prefix = f"test-{uuid.uuid4().hex}"
    app = Offload(f"{REDIS_URL}?prefix={prefix}&op_timeout=2", embedded_worker=False)
    try:
        await app.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    try:
        yield app
    finally:
        await app.close()
        await drop_redis_keys(prefix)


async def stop_now(worker: Worker) -> None:
    worker.stop()


async def idle(worker: Worker) -> asyncio.Task[None]:
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    await asyncio.sleep(0.2)  # past its first empty claim, into the blocking wait
    return runner


@pytest.mark.parametrize("queues", [None, ["default"]], ids=["all queues", "one queue"])
async def test_a_job_reaching_an_idle_worker_runs(jobs: Offload, queues: list[str] | None) -> None:
    @jobs.task
    async def ping() -> str:
        return "pong"

    first = await ping.enqueue()  # the queue is known before the worker starts
    worker = Worker(jobs, queues=queues, install_signals=False)
    runner = await idle(worker)
    try:
        assert "pong" == await first.result(timeout=5)
        for _ in range(3):  # each arrives while the worker waits
            job = await ping.enqueue()
            assert "pong" == await job.result(timeout=5)
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)


async def test_stopping_an_idle_worker_ends_its_wait_at_once(
    jobs: Offload, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wait far longer than the test allows: only the stop can end it in time.
    monkeypatch.setattr(offload.worker, "IDLE_RECHECK", 60.0)

    @jobs.task
    async def later() -> None:
        return None

    await (await later.enqueue()).refresh()  # the queue exists, so the wait is pipelined
    worker = Worker(jobs, install_signals=False)
    runner = await idle(worker)
    await later.enqueue()
    await asyncio.sleep(0.3)  # that job ran; the worker waits again
    worker.stop()
    await asyncio.wait_for(runner, 10)
    job = await later.enqueue()
    await asyncio.sleep(0.2)
    await job.refresh()
    assert (JobState.QUEUED, 0) == (job.state, job.record.attempt)


async def test_a_job_arriving_as_the_worker_stops_is_run_or_given_back(jobs: Offload) -> None:
    """Whichever comes first, the job never stays claimed by a worker that has left."""

    @jobs.task(retries=0)
    async def quick() -> None:
        return None

    await (await quick.enqueue()).refresh()
    for _ in range(10):
        worker = Worker(jobs, install_signals=False)
        runner = await idle(worker)

        job, _ = await asyncio.gather(quick.enqueue(), stop_now(worker))
        await asyncio.wait_for(runner, 10)
        await job.refresh()
        assert (job.state, job.record.attempt) in {
            (JobState.SUCCEEDED, 1),
            (JobState.QUEUED, 0),
        }


async def test_the_wake_up_list_stays_short_with_no_one_waiting(jobs: Offload) -> None:
    """Each change pushes a token; with no worker to take them the list is cut at 64."""

    @jobs.task
    async def unread() -> None:
        return None

    for _ in range(100):
        await unread.enqueue()
    conn = jobs.store._conn  # type: ignore[attr-defined]
    [length] = await conn.run([("LLEN", conn.layout.queue("default").wake)])
    assert 64 == length
