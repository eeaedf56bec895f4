"""The operator actions and the redacted view, on a real SQLite file and on the memory store:
what the jobs API, the CLI, ``Job.cancel`` and the dashboard all mean by get, list, cancel,
retry, purge, pause and resume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, cast

import pytest

from offload import JobContext, Offload, Worker, admin, redaction, schedules
from offload.errors import InvalidCursor, InvalidTransition, JobNotFound, UnknownSchedule
from offload.records import JobRecord, JobState
from offload.redaction import REDACTED, Secret
from offload.stores import ClaimRequest, JobFilter, Store


@pytest.fixture(params=["sqlite", "memory"])
async def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Offload]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else "memory://"
    app = Offload(url, embedded_worker=False)

    @app.task(name="ok")
    async def ok(value: int) -> dict[str, int]:
        return {"value": value}

    @app.task(name="boom", retries=0)
    async def boom(password: str) -> None:
        raise RuntimeError(f"login with {password} refused")

    @app.task(name="login", retries=0)
    async def login(user: str, code: Annotated[str, Secret], ctx: JobContext) -> dict[str, str]:
        await ctx.progress(0.5, f"checking {code}")
        return {"user": user, "api_key": f"key-of-{user}"}

    @app.periodic(every=timedelta(minutes=5), name="tick")
    async def tick() -> None: ...

    async with app:
        yield app


async def run_all(jobs: Offload) -> None:
    await Worker(jobs, install_signals=False).run_until_idle()


class FinishesAfterRead:
    """A real store on which the job finishes between ``cancel_job``'s read and its cancel,
    as when a worker completes it in that moment."""

    def __init__(self, store: Store, finish: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._finish = finish

    async def get(self, job_id: str) -> JobRecord | None:
        record = await self._store.get(job_id)
        await self._finish()
        return record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class TestJobs:
    async def test_get_returns_the_job_or_says_it_is_missing(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        assert job.id == (await admin.get_job(jobs.store, job.id)).id
        with pytest.raises(JobNotFound, match="job nope not found"):
            await admin.get_job(jobs.store, "nope")

    async def test_list_pages_newest_first_and_refuses_a_made_up_cursor(
        self, jobs: Offload
    ) -> None:
        ids = [(await jobs.tasks["ok"].enqueue(i)).id for i in range(3)]
        first = await admin.list_jobs(jobs.store, JobFilter(), 2, None)
        rest = await admin.list_jobs(jobs.store, JobFilter(), 2, first.next_cursor)
        assert ids[::-1] == [r.id for r in first.jobs + rest.jobs]
        with pytest.raises(InvalidCursor):
            await admin.list_jobs(jobs.store, JobFilter(), 2, "bm90LWEtY3Vyc29y")

    async def test_list_filters_by_state_and_task(self, jobs: Offload) -> None:
        failed = await jobs.tasks["boom"].enqueue("pw")
        await run_all(jobs)
        queued = await jobs.tasks["ok"].enqueue(1)
        by_state = await admin.list_jobs(jobs.store, JobFilter(states=(JobState.FAILED,)), 10, None)
        by_task = await admin.list_jobs(jobs.store, JobFilter(tasks=("ok",)), 10, None)
        assert ([failed.id], [queued.id]) == (
            [r.id for r in by_state.jobs],
            [r.id for r in by_task.jobs],
        )

    async def test_cancel_a_queued_job_is_final(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        assert JobState.CANCELLED == (await admin.cancel_job(jobs.store, job.id)).state
        await run_all(jobs)
        assert JobState.CANCELLED == (await admin.get_job(jobs.store, job.id)).state

    async def test_cancel_a_running_job_asks_its_worker(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        await jobs.store.claim(ClaimRequest("w", 30.0))
        record = await admin.cancel_job(jobs.store, job.id)
        assert (JobState.RUNNING, True) == (record.state, record.cancel_requested)

    @pytest.mark.parametrize("cancel_first", [False, True], ids=["succeeded", "cancelled"])
    async def test_cancel_a_finished_job_is_refused_naming_its_state(
        self, jobs: Offload, cancel_first: bool
    ) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        if cancel_first:
            await admin.cancel_job(jobs.store, job.id)
        await run_all(jobs)
        state = "cancelled" if cancel_first else "succeeded"
        with pytest.raises(admin.NotCancellable) as refused:
            await admin.cancel_job(jobs.store, job.id)
        assert (
            f"job {job.id} is already {state}; only queued or running jobs can be cancelled",
            state,
        ) == (str(refused.value), refused.value.record.state.value)
        assert isinstance(refused.value, InvalidTransition)
        with pytest.raises(JobNotFound, match="job nope not found"):
            await admin.cancel_job(jobs.store, "nope")

    async def test_a_job_that_finishes_while_it_is_cancelled_is_refused(
        self, jobs: Offload
    ) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        racing = cast("Store", FinishesAfterRead(jobs.store, lambda: run_all(jobs)))
        with pytest.raises(admin.NotCancellable) as refused:
            await admin.cancel_job(racing, job.id)
        assert f"job {job.id} finished as succeeded before it could be cancelled" == str(
            refused.value
        )
        assert JobState.SUCCEEDED == refused.value.record.state

    async def test_retry_requeues_failed_and_cancelled_jobs_only(self, jobs: Offload) -> None:
        failed = await jobs.tasks["boom"].enqueue("pw")
        queued = await jobs.tasks["ok"].enqueue(1)
        await jobs.store.cancel(queued.id)
        await run_all(jobs)
        assert JobState.FAILED == (await admin.get_job(jobs.store, failed.id)).state
        assert JobState.QUEUED == (await admin.retry_job(jobs.store, failed.id)).state
        with pytest.raises(
            InvalidTransition, match=f"job {failed.id} is queued; only failed or cancelled"
        ):
            await admin.retry_job(jobs.store, failed.id)
        assert JobState.QUEUED == (await admin.retry_job(jobs.store, queued.id)).state
        with pytest.raises(JobNotFound, match="job nope not found"):
            await admin.retry_job(jobs.store, "nope")

    async def test_purge_deletes_finished_jobs_past_the_age_only(self, jobs: Offload) -> None:
        done = await jobs.tasks["ok"].enqueue(1)
        await run_all(jobs)
        waiting = await jobs.tasks["ok"].options(delay=3600).enqueue(2)
        assert 0 == await admin.purge_jobs(jobs.store, 3600)
        assert 1 == await admin.purge_jobs(jobs.store, 0)
        with pytest.raises(JobNotFound):
            await admin.get_job(jobs.store, done.id)
        assert JobState.QUEUED == (await admin.get_job(jobs.store, waiting.id)).state

    async def test_delete_takes_a_finished_or_queued_job_and_frees_its_key(
        self, jobs: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        done = await jobs.tasks["ok"].options(key="k").enqueue(1)
        await run_all(jobs)
        waiting = await jobs.tasks["ok"].options(delay=3600).enqueue(2)
        caplog.set_level("INFO", logger="offload.admin")
        assert JobState.SUCCEEDED == (await admin.delete_job(jobs.store, done.id)).state
        assert JobState.CANCELLED == (await admin.delete_job(jobs.store, waiting.id)).state
        for gone in (done, waiting):
            with pytest.raises(JobNotFound):
                await admin.get_job(jobs.store, gone.id)
        assert [("job.deleted", done.id), ("job.deleted", waiting.id)] == [
            (r.__dict__["action"], r.__dict__["job_id"]) for r in caplog.records
        ]
        again = await jobs.tasks["ok"].options(key="k").enqueue(3)
        assert again.id != done.id
        with pytest.raises(JobNotFound, match="job nope not found"):
            await admin.delete_job(jobs.store, "nope")

    async def test_delete_refuses_a_running_job_and_leaves_it_running(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        await jobs.store.claim(ClaimRequest("w", 30.0))
        with pytest.raises(InvalidTransition, match="is running; only finished jobs can be"):
            await admin.delete_job(jobs.store, job.id)
        assert JobState.RUNNING == (await admin.get_job(jobs.store, job.id)).state


class TestJobCancel:
    """``Job.cancel`` follows ``admin.cancel_job`` and answers with a boolean."""

    async def test_true_for_a_queued_or_an_already_cancelled_job(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        assert (True, True) == (await job.cancel(), await job.cancel())
        assert JobState.CANCELLED == job.state

    async def test_true_for_a_running_job_whose_worker_is_asked(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        await jobs.store.claim(ClaimRequest("w", 30.0))
        assert await job.cancel()
        assert (JobState.RUNNING, True) == (job.state, job.record.cancel_requested)

    async def test_false_for_a_finished_job_and_the_handle_sees_it(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        await run_all(jobs)
        assert not await job.cancel()
        assert JobState.SUCCEEDED == job.state

    async def test_a_purged_job_is_not_found(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        await run_all(jobs)
        await admin.purge_jobs(jobs.store, 0)
        with pytest.raises(JobNotFound, match=f"job {job.id} no longer exists"):
            await job.cancel()


class TestView:
    async def test_secrets_are_hidden_in_arguments_and_in_the_error(
        self, jobs: Offload, fresh_redactor: redaction.Redactor
    ) -> None:
        job = await jobs.tasks["boom"].enqueue("hunter2-secret")
        await run_all(jobs)
        shown = admin.view(await admin.get_job(jobs.store, job.id))
        assert shown.error is not None
        assert "RuntimeError" == shown.error.type
        everything = json.dumps(
            [shown.args, shown.kwargs, shown.result, shown.meta, shown.error.message],
            default=str,
        ) + str(shown.error.traceback)
        assert "hunter2-secret" not in everything
        assert "hunter2-secret" in shown.record.kwargs  # the stored job is as it was

    async def test_a_secret_parameter_and_the_progress_message_are_hidden(
        self, jobs: Offload, fresh_redactor: redaction.Redactor
    ) -> None:
        job = await jobs.tasks["login"].enqueue("ann", "0451-code")
        await jobs.store.claim(ClaimRequest("w", 30.0))
        fresh_redactor.register("s3cr3t-token")
        await jobs.store.set_progress(
            job.id, "w", 1, 0.5, "fetching redis://:pw@cache with s3cr3t-token"
        )
        running = admin.view(await admin.get_job(jobs.store, job.id))
        assert running.progress is not None
        assert {"user": "ann", "code": REDACTED} == running.kwargs
        assert "fetching redis://:***@cache with ***" == running.progress.message

    async def test_a_secret_key_in_the_result_is_hidden(
        self, jobs: Offload, fresh_redactor: redaction.Redactor
    ) -> None:
        job = await jobs.tasks["login"].enqueue("ann", "0451-code")
        await run_all(jobs)
        shown = admin.view(await admin.get_job(jobs.store, job.id))
        assert {"user": "ann", "api_key": REDACTED} == shown.result

    async def test_the_result_is_decoded_and_a_hand_edited_one_shown_as_stored(
        self, jobs: Offload
    ) -> None:
        job = await jobs.tasks["ok"].enqueue(7)
        await run_all(jobs)
        record = await admin.get_job(jobs.store, job.id)
        assert {"value": 7} == admin.view(record).result
        record.result = "not json"
        assert "not json" == admin.view(record).result
        assert "decoded" == admin.view(record, lambda raw: "decoded").result


class TestSchedules:
    async def test_pause_and_resume_show_in_the_status(self, jobs: Offload) -> None:
        [before] = await admin.statuses(jobs)
        assert ("tick", False, 3) == (before.schedule.name, before.paused, len(before.next_times))
        assert (await admin.set_paused(jobs, "tick", True)).paused
        [paused] = await admin.statuses(jobs)
        assert paused.paused
        assert not (await admin.set_paused(jobs, "tick", False)).paused
        [resumed] = await admin.statuses(jobs)
        assert not resumed.paused

    async def test_resume_passes_over_the_slots_missed_while_paused(self, jobs: Offload) -> None:
        await admin.set_paused(jobs, "tick", True)
        resumed = await admin.set_paused(jobs, "tick", False)
        assert resumed.fired_until is not None
        assert resumed.fired_until <= await jobs.store.now()

    async def test_an_unknown_schedule_names_the_known_ones(self, jobs: Offload) -> None:
        with pytest.raises(UnknownSchedule, match="'tock'; known schedules: tick"):
            await admin.set_paused(jobs, "tock", True)
        with pytest.raises(UnknownSchedule):
            admin.get_schedule(jobs, "tock")

    def test_the_old_import_path_still_resolves(self) -> None:
        assert schedules.set_paused is admin.set_paused
        assert schedules.statuses is admin.statuses
        assert schedules.ScheduleStatus is admin.ScheduleStatus
        with pytest.raises(AttributeError):
            _ = schedules.no_such_name
