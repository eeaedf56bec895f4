"""The operator actions and the redacted view, on a real SQLite file: what the jobs API, the
CLI and the dashboard all mean by get, list, cancel, retry, purge, pause and resume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from offload import Offload, Worker, admin, redaction, schedules
from offload.errors import InvalidCursor, InvalidTransition, JobNotFound, UnknownSchedule
from offload.records import JobState
from offload.stores import ClaimRequest, JobFilter


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[Offload]:
    app = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)

    @app.task(name="ok")
    async def ok(value: int) -> dict[str, int]:
        return {"value": value}

    @app.task(name="boom", retries=0)
    async def boom(password: str) -> None:
        raise RuntimeError(f"login with {password} refused")

    @app.periodic(every=timedelta(minutes=5), name="tick")
    async def tick() -> None: ...

    async with app:
        yield app


async def run_all(jobs: Offload) -> None:
    await Worker(jobs, install_signals=False).run_until_idle()


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

    async def test_cancel_a_queued_job_is_final_and_idempotent(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        assert JobState.CANCELLED == (await admin.cancel_job(jobs.store, job.id)).state
        assert JobState.CANCELLED == (await admin.cancel_job(jobs.store, job.id)).state
        await run_all(jobs)
        assert JobState.CANCELLED == (await admin.get_job(jobs.store, job.id)).state

    async def test_cancel_a_running_job_asks_its_worker(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        await jobs.store.claim(ClaimRequest("w", 30.0))
        record = await admin.cancel_job(jobs.store, job.id)
        assert (JobState.RUNNING, True) == (record.state, record.cancel_requested)

    async def test_cancel_a_finished_job_is_refused_naming_its_state(self, jobs: Offload) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        await run_all(jobs)
        with pytest.raises(InvalidTransition, match="is already succeeded; only queued or running"):
            await admin.cancel_job(jobs.store, job.id)
        with pytest.raises(JobNotFound):
            await admin.cancel_job(jobs.store, "nope")

    async def test_retry_requeues_failed_jobs_only(self, jobs: Offload) -> None:
        failed = await jobs.tasks["boom"].enqueue("pw")
        queued = await jobs.tasks["ok"].enqueue(1)
        await jobs.store.cancel(queued.id)
        await run_all(jobs)
        assert JobState.FAILED == (await admin.get_job(jobs.store, failed.id)).state
        assert JobState.QUEUED == (await admin.retry_job(jobs.store, failed.id)).state
        with pytest.raises(InvalidTransition, match="only failed or cancelled"):
            await admin.retry_job(jobs.store, failed.id)
        assert JobState.QUEUED == (await admin.retry_job(jobs.store, queued.id)).state
        with pytest.raises(JobNotFound):
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
        assert not (await admin.set_paused(jobs, "tick", False)).paused

    async def test_an_unknown_schedule_names_the_known_ones(self, jobs: Offload) -> None:
        with pytest.raises(UnknownSchedule, match="known schedules: tick"):
            await admin.set_paused(jobs, "tock", True)

    def test_the_old_import_path_still_resolves(self) -> None:
        assert schedules.set_paused is admin.set_paused
        assert schedules.ScheduleStatus is admin.ScheduleStatus
