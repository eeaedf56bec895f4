"""Task dependencies run by a real worker on a real SQLite file: resolved for each job, and
closed when the job ends, whichever way it ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, Any

import fastapi
import pytest

from offload import Depends, Job, JobCancelled, JobContext, JobFailed, JobState, Offload, Worker

events: list[str] = []


@pytest.fixture(autouse=True)
def _clear_events() -> None:
    events.clear()


class Settings:
    def __init__(self) -> None:
        events.append("settings")
        self.dsn = "db://"


async def get_settings() -> Settings:
    return Settings()


async def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> AsyncIterator[str]:
    events.append("open")
    try:
        yield f"session({settings.dsn})"
    except BaseException as exc:
        events.append(f"saw {type(exc).__name__}")
        raise
    finally:
        events.append("close")


def sync_resource(ctx: JobContext) -> Iterator[str]:
    events.append(f"enter in {threading.current_thread().name}")
    yield f"resource for attempt {ctx.attempt}"
    events.append("exit")


def attempt_of(ctx: JobContext) -> str:
    return f"{ctx.job_id}#{ctx.attempt}"


async def broken() -> str:
    raise ConnectionError("database refused the connection")


Start = Callable[[], Awaitable[None]]


@pytest.fixture
async def start(jobs: Offload) -> AsyncIterator[Start]:
    """Starts a worker in the test's loop, once the test has registered its tasks; stopped
    (drained) at the end of the test."""
    worker = Worker(jobs, concurrency=4, install_signals=False, lease=2.0)
    runner: list[asyncio.Task[None]] = []

    async def start_worker() -> None:
        runner.append(asyncio.create_task(worker.run()))
        await worker.started.wait()

    yield start_worker
    worker.stop()
    for task in runner:
        await asyncio.wait_for(task, 10)


async def until_running(job: Job[Any]) -> None:
    while job.state is not JobState.RUNNING:
        await asyncio.sleep(0.01)
        await job.refresh()


class TestResolution:
    async def test_sub_dependencies_resolved_once_and_closed(
        self, jobs: Offload, start: Start
    ) -> None:
        """Both forms in one task: settings, asked for twice, is made once per job; the
        session is closed after the task returns."""

        @jobs.task
        async def send(
            user_id: int,
            session: Annotated[str, Depends(get_session)],
            settings: Settings = Depends(get_settings),
        ) -> str:
            events.append("task")
            return f"{user_id} {session} {settings.dsn}"

        # Annotated without a default: right at run time, though mypy asks for the argument.
        job = await send.enqueue(7)  # type: ignore[call-arg]
        await start()
        assert "7 session(db://) db://" == await job.result(timeout=5)
        assert ["settings", "open", "task", "close"] == events

    async def test_each_job_resolves_its_own(self, jobs: Offload, start: Start) -> None:
        """Two jobs, two settings objects: the cache is per job."""

        @jobs.task
        async def show(settings: Settings = Depends(get_settings)) -> int:
            return id(settings)

        first, second = await show.enqueue(), await show.enqueue()
        await start()
        await first.result(timeout=5)
        await second.result(timeout=5)
        assert 2 == events.count("settings")

    async def test_sync_task_and_sync_dependencies(self, jobs: Offload, start: Start) -> None:
        """A sync generator dependency runs in the task threads, sees the job's context,
        and the sync task gets its value in its thread."""

        @jobs.task
        def report(resource: str = Depends(sync_resource), ident: str = Depends(attempt_of)) -> str:
            events.append(f"task in {threading.current_thread().name}")
            return f"{resource} {ident}"

        job = await report.enqueue()
        await start()
        result = await job.result(timeout=5)
        assert f"resource for attempt 1 {job.id}#1" == result
        assert events[0].startswith("enter in offload-sync")
        assert events[1].startswith("task in offload-sync")
        assert "exit" == events[2]

    async def test_fastapi_depends(self, jobs: Offload, start: Start) -> None:
        """``fastapi.Depends`` works in a task as offload's does."""

        @jobs.task
        async def send(session: str = fastapi.Depends(get_session)) -> str:
            return session

        job = await send.enqueue()
        await start()
        assert "session(db://)" == await job.result(timeout=5)
        assert "close" == events[-1]


class TestClosing:
    async def test_closed_with_the_error_when_the_task_fails(
        self, jobs: Offload, start: Start
    ) -> None:
        """The yield dependency's ``except`` sees the task's exception; the job fails with
        it, not with anything the dependency did."""

        @jobs.task(retries=0)
        async def send(session: str = Depends(get_session)) -> None:
            raise LookupError("no such user")

        job = await send.enqueue()
        await start()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=5)
        assert "LookupError" == failed.value.error_type
        assert ["saw LookupError", "close"] == events[-2:]

    async def test_closed_when_the_task_times_out(self, jobs: Offload, start: Start) -> None:
        """The timeout cancels the task; the dependency sees the cancellation and closes."""

        @jobs.task(retries=0, timeout=0.2)
        async def slow(session: str = Depends(get_session)) -> None:
            await asyncio.sleep(30)

        job = await slow.enqueue()
        await start()
        with pytest.raises(JobFailed, match="timeout"):
            await job.result(timeout=5)
        assert ["saw CancelledError", "close"] == events[-2:]

    async def test_closed_when_the_job_is_cancelled(self, jobs: Offload, start: Start) -> None:
        """Cancelling a running job closes what its dependencies hold."""
        started = asyncio.Event()

        @jobs.task
        async def slow(session: str = Depends(get_session)) -> None:
            started.set()
            await asyncio.sleep(30)

        job = await slow.enqueue()
        await start()
        await asyncio.wait_for(started.wait(), 5)
        await until_running(job)
        assert await job.cancel()
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        assert ["saw CancelledError", "close"] == events[-2:]


class TestFailingDependency:
    async def test_the_job_fails_naming_the_dependency(self, jobs: Offload, start: Start) -> None:
        """The stored reason names the dependency and its error; the task never runs."""

        @jobs.task(retries=0)
        async def send(value: str = Depends(broken)) -> None:
            events.append("task")

        job = await send.enqueue()
        await start()
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=5)
        assert "DependencyFailed" == failed.value.error_type
        stored = (await job.refresh()).error
        assert stored is not None
        expected = "dependency broken raised ConnectionError: database refused the connection"
        assert expected == stored.message
        assert "ConnectionError" in (stored.traceback or "")
        assert "task" not in events

    async def test_its_error_goes_through_the_retry_policy(
        self, jobs: Offload, start: Start
    ) -> None:
        """``give_up_on`` is matched against the dependency's own error."""

        @jobs.task(retries=3, give_up_on=(ConnectionError,))
        async def send(value: str = Depends(broken)) -> None: ...

        job = await send.enqueue()
        await start()
        with pytest.raises(JobFailed):
            await job.result(timeout=5)
        assert 1 == (await job.refresh()).attempt

    async def test_it_retries_by_the_policy(self, jobs: Offload, start: Start) -> None:
        """A dependency error the policy retries runs the job again, dependencies and all."""

        @jobs.task(retries=1, backoff=0)
        async def send(value: str = Depends(broken)) -> None: ...

        job = await send.enqueue()
        await start()
        with pytest.raises(JobFailed, match="dependency broken raised ConnectionError"):
            await job.result(timeout=5)
        assert 2 == (await job.refresh()).attempt

    async def test_an_error_while_closing_fails_the_job(self, jobs: Offload, start: Start) -> None:
        """A yield dependency that raises on close, after the task returned, fails the job
        with its name."""

        async def commit_fails() -> AsyncIterator[str]:
            yield "session"
            raise RuntimeError("commit failed")

        @jobs.task(retries=0)
        async def send(session: str = Depends(commit_fails)) -> str:
            return session

        job = await send.enqueue()
        await start()
        with pytest.raises(JobFailed, match=r"dependency .*commit_fails raised RuntimeError"):
            await job.result(timeout=5)
