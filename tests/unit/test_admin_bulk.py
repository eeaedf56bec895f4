"""Bulk operator actions (``admin.bulk_action``, ``admin.bulk_purge``) and the lines the
one-job actions log with who asked, on a real SQLite file and on the memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from offload import Offload, Worker, admin
from offload.errors import StoreUnavailable
from offload.records import JobRecord, JobState
from offload.stores import ClaimRequest, JobFilter, Page, Store

FAILED = (JobState.FAILED,)
SUMMARY_KEYS = ("matched", "changed", "skipped", "dry_run", "filter", "actor")


@pytest.fixture(params=["sqlite", "memory"])
async def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Offload]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else "memory://"
    app = Offload(url, embedded_worker=False)

    @app.task(name="ok")
    async def ok(value: int) -> int:
        return value

    @app.task(name="boom", retries=0)
    async def boom(value: int) -> None:
        raise RuntimeError(f"boom {value}")

    @app.task(name="bang", retries=0)
    async def bang(value: int) -> None:
        raise RuntimeError(f"bang {value}")

    async with app:
        yield app


async def run_all(jobs: Offload) -> None:
    await Worker(jobs, install_signals=False).run_until_idle()


async def states(jobs: Offload, ids: list[str]) -> list[JobState]:
    out = []
    for job_id in ids:
        record = await jobs.store.get(job_id)
        assert record is not None
        out.append(record.state)
    return out


class ChangesAfterSelection:
    """A real store on which ``meanwhile`` runs once the last page of a listing is read: the
    jobs change between a bulk run's selection and its actions, as when a worker finishes
    them in that moment."""

    def __init__(self, store: Store, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._meanwhile = meanwhile

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        page = await self._store.list(filter, limit, cursor)
        if page.next_cursor is None:
            await self._meanwhile()
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class FailsAfter:
    """A real store that becomes unreachable after ``count`` retries."""

    def __init__(self, store: Store, count: int) -> None:
        self._store = store
        self._left = count

    async def retry(self, job_id: str) -> JobRecord | None:
        if self._left == 0:
            raise StoreUnavailable("store unreachable")
        self._left -= 1
        return await self._store.retry(job_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def logged(caplog: pytest.LogCaptureFixture, action: str) -> list[dict[str, Any]]:
    return [r.__dict__ for r in caplog.records if r.__dict__.get("action") == action]


class TestBulkAction:
    async def test_retry_of_one_tasks_failed_jobs_leaves_the_others_alone(
        self, jobs: Offload
    ) -> None:
        boom = [(await jobs.tasks["boom"].enqueue(i)).id for i in range(3)]
        bang = [(await jobs.tasks["bang"].enqueue(i)).id for i in range(2)]
        await run_all(jobs)

        outcome = await admin.bulk_action(
            jobs.store, "retry", JobFilter(states=FAILED, tasks=("boom",))
        )

        assert admin.BulkOutcome(matched=3, changed=3, skipped=[]) == outcome
        assert [JobState.QUEUED] * 3 == await states(jobs, boom)
        assert [JobState.FAILED] * 2 == await states(jobs, bang)

    async def test_every_page_of_the_selection_is_changed(
        self, jobs: Offload, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The ids are gathered over every page before any changes, so none is missed."""
        monkeypatch.setattr(admin, "_PAGE", 2)
        ids = [(await jobs.tasks["ok"].enqueue(i)).id for i in range(7)]

        outcome = await admin.bulk_action(jobs.store, "cancel", JobFilter(tasks=("ok",)))

        assert (7, 7) == (outcome.matched, outcome.changed)
        assert [JobState.CANCELLED] * 7 == await states(jobs, ids)

    async def test_refused_jobs_are_skipped_with_the_reason(self, jobs: Offload) -> None:
        failed = (await jobs.tasks["boom"].enqueue(1)).id
        succeeded = (await jobs.tasks["ok"].enqueue(1)).id
        await run_all(jobs)
        queued = (await jobs.tasks["ok"].enqueue(2)).id

        outcome = await admin.bulk_action(jobs.store, "retry", JobFilter())

        assert (3, 1) == (outcome.matched, outcome.changed)
        assert [
            (queued, f"job {queued} is queued; only failed or cancelled jobs can be retried"),
            (
                succeeded,
                f"job {succeeded} is succeeded; only failed or cancelled jobs can be retried",
            ),
        ] == outcome.skipped
        assert [JobState.QUEUED] == await states(jobs, [failed])

    async def test_cancel_skips_a_finished_job_and_asks_a_running_ones_worker(
        self, jobs: Offload
    ) -> None:
        done = (await jobs.tasks["ok"].enqueue(1)).id
        await run_all(jobs)
        running = (await jobs.tasks["ok"].enqueue(2)).id
        await jobs.store.claim(ClaimRequest("w", 30.0))
        queued = (await jobs.tasks["ok"].enqueue(3)).id

        outcome = await admin.bulk_action(jobs.store, "cancel", JobFilter(tasks=("ok",)))

        assert (3, 2) == (outcome.matched, outcome.changed)
        assert [done] == [job_id for job_id, _ in outcome.skipped]
        assert "already succeeded" in outcome.skipped[0][1]
        assert [JobState.CANCELLED, JobState.RUNNING] == await states(jobs, [queued, running])

    async def test_delete_cancels_queued_jobs_first_and_skips_running_ones(
        self, jobs: Offload
    ) -> None:
        running = (await jobs.tasks["ok"].enqueue(1)).id
        await jobs.store.claim(ClaimRequest("w", 30.0))
        queued = (await jobs.tasks["ok"].enqueue(2)).id

        outcome = await admin.bulk_action(jobs.store, "delete", JobFilter())

        assert (2, 1) == (outcome.matched, outcome.changed)
        assert [running] == [job_id for job_id, _ in outcome.skipped]
        assert await jobs.store.get(queued) is None

    async def test_dry_run_counts_and_changes_nothing(
        self, jobs: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        ids = [(await jobs.tasks["boom"].enqueue(i)).id for i in range(4)]
        await run_all(jobs)
        caplog.set_level("INFO", logger="offload.admin")
        seen: list[tuple[int, int]] = []

        outcome = await admin.bulk_action(
            jobs.store,
            "retry",
            JobFilter(states=FAILED),
            dry_run=True,
            progress=lambda done, total: seen.append((done, total)),
        )

        assert admin.BulkOutcome(matched=4, changed=0, skipped=[]) == outcome
        assert [JobState.FAILED] * 4 == await states(jobs, ids)
        assert [] == logged(caplog, "job.retried")
        assert [True] == [line["dry_run"] for line in logged(caplog, "jobs.bulk_retry")]

    async def test_progress_counts_up_to_the_total(self, jobs: Offload) -> None:
        for i in range(5):
            await jobs.tasks["ok"].enqueue(i)
        seen: list[tuple[int, int]] = []

        await admin.bulk_action(
            jobs.store, "cancel", JobFilter(), progress=lambda d, t: seen.append((d, t))
        )

        assert [(done, 5) for done in range(6)] == seen

    async def test_a_job_that_finished_after_the_selection_is_skipped(self, jobs: Offload) -> None:
        ids = [(await jobs.tasks["ok"].enqueue(i)).id for i in range(3)]
        racing = cast("Store", ChangesAfterSelection(jobs.store, lambda: run_all(jobs)))

        outcome = await admin.bulk_action(racing, "cancel", JobFilter(states=(JobState.QUEUED,)))

        assert (3, 0) == (outcome.matched, outcome.changed)
        assert [
            (i, f"job {i} is already succeeded; only queued or running jobs can be cancelled")
            for i in reversed(ids)
        ] == outcome.skipped

    async def test_a_store_failure_stops_the_run_and_says_how_far_it_got(
        self, jobs: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        ids = [(await jobs.tasks["boom"].enqueue(i)).id for i in range(40)]
        await run_all(jobs)
        caplog.set_level("INFO", logger="offload.admin")

        with pytest.raises(StoreUnavailable):
            await admin.bulk_action(
                cast("Store", FailsAfter(jobs.store, 5)), "retry", JobFilter(), actor="ana"
            )

        [stopped] = logged(caplog, "jobs.bulk_retry")
        assert ("WARNING", 40, 5, "StoreUnavailable", "ana") == (
            stopped["levelname"],
            stopped["matched"],
            stopped["changed"],
            stopped["error"],
            stopped["actor"],
        )
        assert 5 == sum(state is JobState.QUEUED for state in await states(jobs, ids))

    async def test_an_unknown_action_names_the_known_ones(self, jobs: Offload) -> None:
        with pytest.raises(ValueError, match="choose retry, cancel or delete"):
            await admin.bulk_action(jobs.store, "requeue", JobFilter())  # type: ignore[arg-type]


class TestBulkPurge:
    async def test_deletes_finished_jobs_matching_the_filter_only(self, jobs: Offload) -> None:
        boom = (await jobs.tasks["boom"].enqueue(1)).id
        bang = (await jobs.tasks["bang"].enqueue(1)).id
        ok = (await jobs.tasks["ok"].enqueue(1)).id
        await run_all(jobs)
        queued_boom = (await jobs.tasks["boom"].enqueue(2)).id

        outcome = await admin.bulk_purge(jobs.store, JobFilter(tasks=("boom", "ok")))

        assert admin.BulkOutcome(matched=2, changed=2, skipped=[]) == outcome
        assert [None, None] == [await jobs.store.get(i) for i in (boom, ok)]
        assert [JobState.FAILED, JobState.QUEUED] == await states(jobs, [bang, queued_boom])

    async def test_older_than_keeps_recent_jobs(self, jobs: Offload) -> None:
        job = (await jobs.tasks["ok"].enqueue(1)).id
        await run_all(jobs)

        recent = await admin.bulk_purge(jobs.store, JobFilter(tasks=("ok",)), 3600)
        old = await admin.bulk_purge(jobs.store, JobFilter(tasks=("ok",)), 0, dry_run=True)

        assert (0, 1) == (recent.matched, old.matched)
        assert [JobState.SUCCEEDED] == await states(jobs, [job])

    async def test_a_state_that_is_not_finished_is_refused(self, jobs: Offload) -> None:
        with pytest.raises(ValueError, match="finished jobs only, not queued ones"):
            await admin.bulk_purge(jobs.store, JobFilter(states=(JobState.QUEUED,)))


class TestActorLines:
    async def test_each_action_logs_who_asked(
        self, jobs: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        job = await jobs.tasks["ok"].enqueue(1)
        caplog.set_level("INFO", logger="offload.admin")

        await admin.cancel_job(jobs.store, job.id, actor="ana")
        await admin.retry_job(jobs.store, job.id, actor="ben")
        await admin.delete_job(jobs.store, job.id, actor="cy")
        other = await jobs.tasks["ok"].enqueue(2)
        await admin.cancel_job(jobs.store, other.id)

        lines = [
            (r["action"], r["job_id"], r["task"], r["state"], r.get("actor"))
            for r in (r.__dict__ for r in caplog.records)
        ]
        assert [
            ("job.cancelled", job.id, "ok", "cancelled", "ana"),
            ("job.retried", job.id, "ok", "queued", "ben"),
            ("job.deleted", job.id, "ok", "cancelled", "cy"),
            ("job.cancelled", other.id, "ok", "cancelled", None),
        ] == lines
        assert "actor" not in caplog.records[-1].__dict__

    async def test_a_bulk_run_logs_each_job_and_one_summary(
        self, jobs: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        ids = [(await jobs.tasks["boom"].enqueue(i)).id for i in range(2)]
        ok = (await jobs.tasks["ok"].enqueue(1)).id
        await run_all(jobs)
        caplog.set_level("INFO", logger="offload.admin")

        await admin.bulk_action(
            jobs.store, "retry", JobFilter(tasks=("boom", "ok")), actor="ops@example.com"
        )

        assert {(i, "ops@example.com") for i in ids} == {
            (line["job_id"], line["actor"]) for line in logged(caplog, "job.retried")
        }
        [summary] = logged(caplog, "jobs.bulk_retry")
        assert {
            "matched": 3,
            "changed": 2,
            "skipped": 1,
            "dry_run": False,
            "filter": {"tasks": ["boom", "ok"]},
            "actor": "ops@example.com",
        } == {k: summary[k] for k in SUMMARY_KEYS}
        assert "INFO" == summary["levelname"]
        assert ok not in {line["job_id"] for line in logged(caplog, "job.retried")}

    async def test_a_purge_logs_its_filter_and_age(
        self, jobs: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        await jobs.tasks["boom"].enqueue(1)
        await run_all(jobs)
        caplog.set_level("INFO", logger="offload.admin")

        await admin.bulk_purge(jobs.store, JobFilter(states=FAILED), 0, actor="ana")

        [summary] = logged(caplog, "jobs.bulk_purge")
        assert ({"states": ["failed"]}, 0, 1, "ana") == (
            summary["filter"],
            summary["older_than"],
            summary["changed"],
            summary["actor"],
        )
        assert ["ana"] == [line["actor"] for line in logged(caplog, "job.deleted")]
