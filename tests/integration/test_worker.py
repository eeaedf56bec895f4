"""The worker against a real SQLite file and a real PostgreSQL schema: every way a job can
end, and how it gets there."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from offload import (
    Cancel,
    Fail,
    Job,
    JobCancelled,
    JobContext,
    JobFailed,
    JobState,
    Offload,
    ResultTimeout,
    Retry,
    RetryPolicy,
    Worker,
)
from offload.errors import StoreUnavailable
from offload.stores import open_store
from tests.stores.conftest import drop_postgres_schema, postgres_unreachable, postgres_url


class Color(Enum):
    RED = "red"


class User(BaseModel):
    name: str
    born: datetime


@dataclass
class Point:
    x: int
    y: int


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test on a fresh SQLite file, then on a fresh schema of the shared PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    schema = f"test_{uuid4().hex}"
    url = postgres_url(schema)
    store = open_store(url)
    try:
        await store.open()
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    await store.close()
    try:
        yield url
    finally:
        await drop_postgres_schema(schema)


@pytest.fixture
async def worker(jobs: Offload) -> AsyncIterator[Worker]:
    """A worker running in the test's loop; started after the test registered its tasks."""
    w = Worker(jobs, concurrency=8, install_signals=False, lease=2.0)
    yield w
    w.stop()


async def start(worker: Worker) -> asyncio.Task[None]:
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    return runner


async def stop(worker: Worker, runner: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(runner, 10)


async def until_running(job: Job[Any]) -> None:
    while job.state is not JobState.RUNNING:
        await asyncio.sleep(0.01)
        await job.refresh()


class TestSuccess:
    async def test_async_and_sync_tasks_return_typed_results(
        self, jobs: Offload, worker: Worker
    ) -> None:
        """Async tasks run on the loop, sync ones in threads; results decode to the
        annotated type."""
        loop_thread = threading.get_ident()
        seen: dict[str, int] = {}

        @jobs.task
        async def add(a: int, b: int) -> int:
            seen["async"] = threading.get_ident()
            return a + b

        @jobs.task
        def greet(user: User, at: datetime, amount: Decimal, color: Color, p: Point) -> User:
            seen["sync"] = threading.get_ident()
            assert isinstance(user, User)
            assert isinstance(at, datetime)
            assert isinstance(amount, Decimal)
            assert color is Color.RED
            assert Point(1, 2) == p
            return User(name=f"hi {user.name}", born=at)

        runner = await start(worker)
        born = datetime(2000, 1, 1, tzinfo=UTC)
        j1 = await add.enqueue(2, b=3)
        j2 = await greet.enqueue(
            User(name="ada", born=born), born, Decimal("1.10"), Color.RED, Point(1, 2)
        )
        assert 5 == await j1.result(timeout=5)
        assert User(name="hi ada", born=born) == await j2.result(timeout=5)
        assert loop_thread == seen["async"]
        assert loop_thread != seen["sync"]
        await stop(worker, runner)

    async def test_job_handle_reflects_the_stored_row(self, jobs: Offload, worker: Worker) -> None:
        """After a run the handle shows succeeded, attempt 1 and start/finish times."""

        @jobs.task
        async def noop() -> None:
            return None

        runner = await start(worker)
        job = await noop.enqueue()
        await job.result(timeout=5)
        assert JobState.SUCCEEDED == job.state
        assert 1 == job.attempt
        assert job.started_at is not None
        assert job.finished_at is not None
        assert job.finished_at >= job.started_at >= job.enqueued_at - timedelta(seconds=1)
        fetched = await jobs.get(job.id)
        assert fetched is not None
        assert JobState.SUCCEEDED == fetched.state
        assert await jobs.get(str(uuid4())) is None
        await stop(worker, runner)

    async def test_context_gives_attempt_and_progress(self, jobs: Offload, worker: Worker) -> None:
        """A JobContext parameter receives the job id and attempt and can report progress."""
        release = asyncio.Event()

        @jobs.task
        async def report(ctx: JobContext, n: int) -> str:
            await ctx.progress(0.5, f"half of {n}")
            await release.wait()
            return f"{ctx.job_id}:{ctx.attempt}"

        runner = await start(worker)
        job = await report.enqueue(10)
        for _ in range(200):
            await job.refresh()
            if job.progress is not None:
                break
            await asyncio.sleep(0.01)
        assert job.progress is not None
        assert (0.5, "half of 10") == (job.progress.fraction, job.progress.message)
        release.set()
        assert f"{job.id}:1" == await job.result(timeout=5)
        await stop(worker, runner)


class TestFailure:
    async def test_retries_with_backoff_then_succeeds(self, jobs: Offload, worker: Worker) -> None:
        """A failing task is retried with backoff and succeeds on a later attempt."""
        attempts: list[int] = []

        @jobs.task(retries=3, backoff=RetryPolicy(base=0.05, jitter=0))
        async def flaky(ctx: JobContext) -> int:
            attempts.append(ctx.attempt)
            if ctx.attempt < 3:
                raise ConnectionError("upstream down")
            return ctx.attempt

        runner = await start(worker)
        job = await flaky.enqueue()
        assert 3 == await job.result(timeout=5)
        assert [1, 2, 3] == attempts
        await stop(worker, runner)

    async def test_exhausted_retries_fail_with_remote_error(
        self, jobs: Offload, worker: Worker
    ) -> None:
        """After the last attempt the job fails; result() raises JobFailed with the type,
        message and traceback of the task's exception."""

        @jobs.task(retries=1, backoff=0.01)
        def broken() -> None:
            raise ValueError("bad input 42")

        runner = await start(worker)
        job = await broken.enqueue()
        with pytest.raises(JobFailed) as info:
            await job.result(timeout=5)
        assert ("ValueError", "bad input 42") == (info.value.error_type, info.value.error_message)
        assert info.value.traceback is not None
        assert "broken" in info.value.traceback
        assert 2 == job.attempt
        await stop(worker, runner)

    async def test_give_up_on_fails_at_once(self, jobs: Offload, worker: Worker) -> None:
        """An exception listed in give_up_on is not retried; one outside retry_on neither."""

        @jobs.task(retries=5, backoff=0.01, give_up_on=(PermissionError,))
        async def denied() -> None:
            raise PermissionError("no")

        @jobs.task(retries=5, backoff=0.01, retry_on=(ConnectionError,))
        async def other() -> None:
            raise KeyError("k")

        runner = await start(worker)
        for task in (denied, other):
            job = await task.enqueue()
            with pytest.raises(JobFailed):
                await job.result(timeout=5)
            assert 1 == job.attempt
        await stop(worker, runner)

    async def test_retry_fail_and_cancel_raised_by_the_task(
        self, jobs: Offload, worker: Worker
    ) -> None:
        """Retry reschedules after its delay; Fail ends failed at once; Cancel ends
        cancelled."""
        runs: list[float] = []

        @jobs.task(retries=3)
        async def again(ctx: JobContext) -> int:
            runs.append(time.monotonic())
            if ctx.attempt == 1:
                raise Retry(after=0.2)
            return ctx.attempt

        @jobs.task(retries=3)
        async def fail() -> None:
            raise Fail("account closed")

        @jobs.task
        async def cancel() -> None:
            raise Cancel("nothing to do")

        runner = await start(worker)
        j1, j2, j3 = await again.enqueue(), await fail.enqueue(), await cancel.enqueue()
        assert 2 == await j1.result(timeout=5)
        assert runs[1] - runs[0] >= 0.19
        with pytest.raises(JobFailed, match="account closed"):
            await j2.result(timeout=5)
        assert 1 == j2.attempt
        with pytest.raises(JobCancelled):
            await j3.result(timeout=5)
        await stop(worker, runner)

    async def test_async_timeout_cancels_the_task(self, jobs: Offload, worker: Worker) -> None:
        """An async task past its timeout is cancelled and fails with TimeoutError."""
        cancelled = asyncio.Event()

        @jobs.task(timeout=0.1, retries=0)
        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        runner = await start(worker)
        job = await slow.enqueue()
        with pytest.raises(JobFailed) as info:
            await job.result(timeout=5)
        assert "TimeoutError" == info.value.error_type
        assert cancelled.is_set()
        await stop(worker, runner)

    async def test_sync_timeout_fails_and_abandons_the_thread(
        self, jobs: Offload, worker: Worker, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A sync task past its timeout fails with TimeoutError; a warning says its thread
        was abandoned."""
        stop_thread = threading.Event()

        @jobs.task(timeout=0.1, retries=0)
        def stuck() -> None:
            stop_thread.wait(5)

        runner = await start(worker)
        job = await stuck.enqueue()
        with pytest.raises(JobFailed) as info:
            await job.result(timeout=5)
        assert "TimeoutError" == info.value.error_type
        assert any(getattr(r, "action", "") == "job.thread_abandoned" for r in caplog.records)
        stop_thread.set()
        await stop(worker, runner)

    async def test_bad_stored_payload_fails_with_reason(
        self, jobs: Offload, worker: Worker
    ) -> None:
        """A stored payload that no longer fits the task fails the job, with the reason, and
        is not retried."""

        @jobs.task(retries=3)
        async def typed(n: int) -> int:
            return n

        prepared = typed.prepare(1)
        prepared.job.kwargs = '{"n": "not a number"}'
        [job] = await jobs.enqueue_many([prepared])
        runner = await start(worker)
        with pytest.raises(JobFailed) as info:
            await job.result(timeout=5)
        assert "PayloadError" == info.value.error_type
        assert "'n'" in info.value.error_message
        assert 1 == job.attempt
        await stop(worker, runner)

    async def test_unregistered_task_fails_with_reason(self, db_url: str) -> None:
        """A job whose task this worker does not know fails with a reason naming the fix."""
        producer = Offload(db_url, embedded_worker=False)

        @producer.task(name="only.in.producer")
        async def elsewhere() -> None:
            return None

        consumer = Offload(db_url, embedded_worker=False)
        async with producer, consumer:
            job = await elsewhere.enqueue()
            w = Worker(consumer, install_signals=False)
            runner = await start(w)
            with pytest.raises(JobFailed) as info:
                await job.result(timeout=5)
            assert "UnknownTask" == info.value.error_type
            assert "register it" in info.value.error_message
            await stop(w, runner)


class TestScheduling:
    async def test_priority_then_fifo(self, jobs: Offload) -> None:
        """Higher priority jobs run first; equal priorities run in enqueue order."""
        order: list[str] = []

        @jobs.task
        async def record(name: str) -> None:
            order.append(name)

        await record.enqueue("low1")
        await record.options(priority=10).enqueue("high1")
        await record.enqueue("low2")
        await record.options(priority=10).enqueue("high2")
        w = Worker(jobs, concurrency=1, install_signals=False)
        runner = await start(w)
        for _ in range(500):
            if len(order) == 4:
                break
            await asyncio.sleep(0.01)
        assert ["high1", "high2", "low1", "low2"] == order
        await stop(w, runner)

    async def test_delay_and_run_at(self, jobs: Offload, worker: Worker) -> None:
        """A delayed job waits for its time, then runs without waiting out an idle poll."""

        @jobs.task
        async def when() -> float:
            return time.time()

        runner = await start(worker)
        t0 = time.time()
        delayed = await when.options(delay=0.3).enqueue()
        at = await when.options(run_at=datetime.now(UTC) + timedelta(seconds=0.2)).enqueue()
        assert JobState.QUEUED == delayed.state
        ran_delayed = await delayed.result(timeout=5)
        ran_at = await at.result(timeout=5)
        assert ran_delayed - t0 >= 0.29
        assert ran_at - t0 >= 0.19
        await stop(worker, runner)

    async def test_idempotency_key(self, jobs: Offload, worker: Worker) -> None:
        """Enqueueing with a key already on record returns the same job, even after it ran."""
        runs: list[int] = []

        @jobs.task
        async def once(n: int) -> int:
            runs.append(n)
            return n

        runner = await start(worker)
        a = await once.options(key="order-1").enqueue(1)
        b = await once.options(key="order-1").enqueue(2)
        assert a.id == b.id
        assert 1 == await a.result(timeout=5)
        c = await once.options(key="order-1").enqueue(3)
        assert a.id == c.id
        assert [1] == runs
        await stop(worker, runner)

    async def test_queues_limit_what_a_worker_runs(self, jobs: Offload) -> None:
        """A worker given queues runs only jobs from those queues."""

        @jobs.task(queue="mail")
        async def mail() -> str:
            return "mail"

        @jobs.task
        async def plain() -> str:
            return "plain"

        w = Worker(jobs, queues=["mail"], install_signals=False)
        runner = await start(w)
        m, p = await mail.enqueue(), await plain.enqueue()
        assert "mail" == await m.result(timeout=5)
        with pytest.raises(ResultTimeout):
            await p.result(timeout=0.3)
        assert JobState.QUEUED == p.state
        await stop(w, runner)

    async def test_enqueue_many_is_one_batch(self, jobs: Offload, worker: Worker) -> None:
        """enqueue_many stores a mixed batch at once and every job runs."""

        @jobs.task
        async def double(n: int) -> int:
            return 2 * n

        runner = await start(worker)
        handles = await jobs.enqueue_many(
            [double.prepare(i) for i in range(50)] + [double.options(priority=3).prepare(99)]
        )
        assert [2 * i for i in range(50)] + [198] == [await h.result(timeout=5) for h in handles]
        await stop(worker, runner)

    async def test_long_jobs_are_not_hoarded(self, jobs: Offload) -> None:
        """A worker claims no long job before it has a free slot for it, so a second worker
        takes the second job instead of waiting behind the first."""
        gate = asyncio.Event()

        @jobs.task
        async def slow() -> None:
            await gate.wait()

        handles = [await slow.enqueue(), await slow.enqueue()]
        a = Worker(jobs, concurrency=1, install_signals=False)
        b = Worker(jobs, concurrency=1, install_signals=False)
        runners = [await start(a)]
        await until_running(handles[0])
        runners.append(await start(b))
        await until_running(handles[1])
        assert {a.id, b.id} == {h.record.worker_id for h in handles}
        gate.set()
        for h in handles:
            await h.result(timeout=5)
        await stop(a, runners[0])
        await stop(b, runners[1])

    async def test_short_jobs_are_claimed_in_large_batches(self, jobs: Offload) -> None:
        """Once jobs prove short, the worker claims well beyond its free slots, so each
        claim round trip carries many jobs."""

        @jobs.task
        async def quick() -> None:
            return None

        w = Worker(jobs, concurrency=4, install_signals=False)
        assert 0 == w._prefetch_target()
        runner = await start(w)
        handles = await jobs.enqueue_many([quick.prepare() for _ in range(300)])
        for h in handles:
            await h.result(timeout=10)
        assert w._prefetch_target() == 4 * w.concurrency
        await stop(w, runner)


class TestCancel:
    async def test_cancel_queued_job(self, jobs: Offload) -> None:
        """A cancelled queued job never runs."""
        runs: list[int] = []

        @jobs.task
        async def never() -> None:
            runs.append(1)

        job = await never.enqueue()
        assert await job.cancel()
        assert JobState.CANCELLED == job.state
        w = Worker(jobs, install_signals=False)
        runner = await start(w)
        await asyncio.sleep(0.1)
        assert [] == runs
        await stop(w, runner)

    async def test_cancel_running_async_job(self, jobs: Offload) -> None:
        """Cancelling a running async job stops it at the next heartbeat."""
        started = asyncio.Event()

        @jobs.task
        async def long() -> None:
            started.set()
            await asyncio.sleep(30)

        w = Worker(jobs, install_signals=False, lease=0.3)
        runner = await start(w)
        job = await long.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        assert await job.cancel()
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        await stop(w, runner)


class TestShutdown:
    async def test_stop_drains_running_jobs(self, jobs: Offload) -> None:
        """stop() lets running jobs finish within the grace period."""
        started = asyncio.Event()

        @jobs.task
        async def finishing() -> str:
            started.set()
            await asyncio.sleep(0.3)
            return "done"

        w = Worker(jobs, install_signals=False, grace=5)
        runner = await start(w)
        job = await finishing.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        w.stop()
        await asyncio.wait_for(runner, 10)
        await job.refresh()
        assert JobState.SUCCEEDED == job.state

    async def test_jobs_past_grace_are_requeued(self, jobs: Offload) -> None:
        """A job still running when the grace period ends is requeued, not lost."""
        started = asyncio.Event()

        @jobs.task(retries=0)
        async def endless() -> None:
            started.set()
            await asyncio.sleep(30)

        w = Worker(jobs, install_signals=False, grace=0.1)
        runner = await start(w)
        job = await endless.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        w.stop()
        await asyncio.wait_for(runner, 10)
        await job.refresh()
        assert JobState.QUEUED == job.state
        assert job.record.max_attempts >= 2

    async def test_prefetched_jobs_are_released_unstarted(self, jobs: Offload) -> None:
        """Jobs claimed ahead but never started go back with their attempt count undone."""
        gate = asyncio.Event()

        @jobs.task(retries=0)
        async def blocking() -> None:
            await gate.wait()

        handles = [await blocking.enqueue() for _ in range(4)]
        w = Worker(jobs, concurrency=1, prefetch=3, install_signals=False, grace=5)
        runner = await start(w)
        for _ in range(500):  # the claim that fills the buffer is under way
            if len(w._ready) == 3:
                break
            await asyncio.sleep(0.01)
        w.stop()
        gate.set()
        await asyncio.wait_for(runner, 10)
        states = []
        for h in handles:
            await h.refresh()
            states.append((h.state, h.record.attempt))
        assert [(JobState.SUCCEEDED, 1)] + [(JobState.QUEUED, 0)] * 3 == states


class TestEncoding:
    async def test_unencodable_argument_raises_before_storing(self, jobs: Offload) -> None:
        """An argument that cannot be JSON raises TypeError naming it; nothing is stored."""

        @jobs.task
        async def takes(x: int, *, y: int = 0) -> None:
            return None

        with pytest.raises(TypeError, match="'x'"):
            await takes.enqueue(object())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="'y'"):
            await takes.enqueue(1, y="nope")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unexpected keyword"):
            await takes.enqueue(1, z=2)  # type: ignore[call-arg]
        assert {} == await jobs.store.counts()

    async def test_uuid_and_inline_call(self, jobs: Offload) -> None:
        """Calling a task directly runs it inline, without the store."""

        @jobs.task
        async def echo(u: UUID) -> UUID:
            return u

        @jobs.task
        def sync_echo(ctx: JobContext, n: int) -> tuple[str, int]:
            return (ctx.job_id, n)

        u = uuid4()
        assert u == await echo(u)
        assert ("inline", 3) == sync_echo(3)
        assert {} == await jobs.store.counts()
