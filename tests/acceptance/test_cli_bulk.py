"""Bulk runs of ``offload jobs retry``, ``cancel`` and ``purge``: the CLI as a real process
against a real SQLite file (and once against the real Redis)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from offload import JobState, admin
from offload.cli import jobs as jobs_cli
from offload.cli._common import CliError
from offload.stores import JobFilter, Store
from tests.acceptance.clijobs import CliJobs
from tests.acceptance.test_cli import assert_one_line_error, cli, get, run_until_idle, with_app
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable
from tests.unit.test_admin_bulk import FailsAfter


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs.txt"


@pytest.fixture
def mixed(db_url: str, runs: Path) -> dict[str, list[str]]:
    """Three failed ``broken`` jobs, one succeeded and one cancelled ``nap`` job, and two
    queued ``nap`` jobs on queue "later" and one on the default queue."""

    async def finished(s: CliJobs) -> dict[str, list[str]]:
        failed = [(await s.broken.enqueue(str(runs))).id for _ in range(3)]
        ok = await s.nap.enqueue(str(runs), 0.0)
        return {"failed": failed, "succeeded": [ok.id]}

    ids = with_app(db_url, finished)
    run_until_idle(db_url)

    async def waiting(s: CliJobs) -> dict[str, list[str]]:
        cancelled = await s.nap.enqueue(str(runs), 0.0)
        await s.app.store.cancel(cancelled.id)
        later = [(await s.nap.options(queue="later").enqueue(str(runs), 0.0)).id for _ in "ab"]
        default = await s.nap.enqueue(str(runs), 0.0)
        return {"cancelled": [cancelled.id], "later": later, "queued": [default.id]}

    return {**ids, **with_app(db_url, waiting)}


def states(url: str, ids: list[str]) -> list[JobState]:
    return [get(url, job_id).state for job_id in ids]


def exists(url: str, job_id: str) -> bool:
    return with_app(url, lambda s: s.app.store.get(job_id)) is not None


def outcome(*args: str) -> dict[str, Any]:
    result = cli(*args, "--json")
    assert 0 == result.returncode, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


class TestBulkRetry:
    def test_failed_jobs_of_one_task_are_queued_and_the_others_left_alone(
        self, db_url: str, mixed: dict[str, list[str]]
    ) -> None:
        """--task broken retries its failed jobs; the cancelled nap job, retryable too,
        stays cancelled. Piped, the run prints its count and no progress bar."""
        result = cli("jobs", "retry", "--task", "broken", "--url", db_url)

        assert (0, "retried 3 jobs\n", "") == (result.returncode, result.stdout, result.stderr)
        assert [JobState.QUEUED] * 3 == states(db_url, mixed["failed"])
        assert [JobState.CANCELLED, JobState.SUCCEEDED] == states(
            db_url, mixed["cancelled"] + mixed["succeeded"]
        )

    def test_dry_run_reports_the_count_and_changes_nothing(
        self, db_url: str, mixed: dict[str, list[str]]
    ) -> None:
        """--dry-run says how many jobs it would retry (failed and cancelled by default)."""
        text = cli("jobs", "retry", "--all", "--dry-run", "--url", db_url)
        data = outcome("jobs", "retry", "--task", "broken", "--dry-run", "--url", db_url)

        assert (0, "would retry 4 jobs (dry run: nothing changed)\n") == (
            text.returncode,
            text.stdout,
        ), text.stderr
        assert {"matched": 3, "changed": 0, "skipped": [], "dry_run": True} == data
        assert [JobState.FAILED] * 3 == states(db_url, mixed["failed"])
        assert [JobState.CANCELLED] == states(db_url, mixed["cancelled"])

    def test_refused_jobs_are_reported_as_skipped_with_the_reason(
        self, db_url: str, mixed: dict[str, list[str]]
    ) -> None:
        """States the action cannot take, asked for by name, are skipped, each with why."""
        text = cli("jobs", "retry", "--state", "failed", "--state", "succeeded", "--url", db_url)

        [ok] = mixed["succeeded"]
        reason = f"job {ok} is succeeded; only failed or cancelled jobs can be retried"
        assert 0 == text.returncode, text.stderr
        assert f"retried 3 jobs, 1 skipped:\n  {reason}\n" == text.stdout
        assert [JobState.SUCCEEDED] == states(db_url, mixed["succeeded"])
        data = outcome("jobs", "retry", "--state", "queued,succeeded", "--url", db_url)
        assert (7, 0) == (data["matched"], data["changed"])
        assert {"id": ok, "reason": reason} in data["skipped"]


class TestBulkCancel:
    def test_queue_cancels_its_queued_jobs_only(
        self, db_url: str, mixed: dict[str, list[str]]
    ) -> None:
        """--queue later cancels the jobs waiting there; the default queue keeps its job."""
        data = outcome("jobs", "cancel", "--queue", "later", "--url", db_url)

        assert {"matched": 2, "changed": 2, "skipped": [], "dry_run": False} == data
        assert [JobState.CANCELLED] * 2 == states(db_url, mixed["later"])
        assert [JobState.QUEUED] == states(db_url, mixed["queued"])

    def test_all_cancels_every_queued_job(self, db_url: str, mixed: dict[str, list[str]]) -> None:
        result = cli("jobs", "cancel", "--all", "--url", db_url)

        assert (0, "cancelled 3 jobs\n") == (result.returncode, result.stdout), result.stderr
        assert [JobState.CANCELLED] * 3 == states(db_url, mixed["later"] + mixed["queued"])


class TestBulkPurge:
    def test_filters_choose_the_finished_jobs_to_delete(
        self, db_url: str, mixed: dict[str, list[str]]
    ) -> None:
        """--task nap purges its succeeded and cancelled jobs, never its queued ones, and
        leaves the failed broken jobs."""
        dry = cli("jobs", "purge", "--task", "nap", "--dry-run", "--url", db_url)
        result = cli("jobs", "purge", "--task", "nap", "--url", db_url)

        assert "would purge 2 finished jobs (dry run: nothing changed)\n" == dry.stdout
        assert (0, "purged 2 finished jobs\n") == (result.returncode, result.stdout), result.stderr
        gone = mixed["succeeded"] + mixed["cancelled"]
        assert [False, False] == [exists(db_url, i) for i in gone]
        assert [JobState.QUEUED] * 3 == states(db_url, mixed["later"] + mixed["queued"])
        assert [JobState.FAILED] * 3 == states(db_url, mixed["failed"])

    def test_the_age_and_the_filters_combine(
        self, db_url: str, mixed: dict[str, list[str]]
    ) -> None:
        recent = outcome(
            "jobs", "purge", "--state", "failed", "--older-than", "1h", "--url", db_url
        )
        old = cli("jobs", "purge", "--state", "failed", "--older-than", "0s", "--url", db_url)

        assert (0, 0) == (recent["matched"], recent["changed"])
        assert "purged 3 finished jobs older than 0s\n" == old.stdout, old.stderr
        assert [True, True] == [exists(db_url, i) for i in mixed["succeeded"] + mixed["cancelled"]]

    def test_age_alone_purges_as_before(self, db_url: str, mixed: dict[str, list[str]]) -> None:
        result = cli("jobs", "purge", "--older-than", "0s", "--url", db_url, "--json")

        assert {"purged": 5} == json.loads(result.stdout), result.stderr

    def test_a_state_that_is_not_finished_is_a_usage_error(self, db_url: str) -> None:
        result = cli("jobs", "purge", "--state", "queued", "--url", db_url)

        assert_one_line_error(result, 2, "finished jobs only", "succeeded, failed, cancelled")


class TestBulkRefusals:
    @pytest.mark.parametrize(
        ("args", "words"),
        [
            pytest.param(["jobs", "retry"], ["no jobs chosen", "--state", "--all"], id="retry"),
            pytest.param(["jobs", "cancel"], ["no jobs chosen", "--queue", "--all"], id="cancel"),
            pytest.param(
                ["jobs", "purge"], ["no jobs chosen", "--older-than", "--all"], id="purge"
            ),
            pytest.param(
                ["jobs", "retry", "JOB", "--state", "failed"], ["job id or filters"], id="id+state"
            ),
            pytest.param(["jobs", "cancel", "JOB", "--all"], ["job id or filters"], id="id+all"),
            pytest.param(["jobs", "retry", "JOB", "--dry-run"], ["bulk run"], id="id+dry-run"),
            pytest.param(
                ["jobs", "cancel", "--all", "--task", "nap"], ["--all", "not both"], id="all+task"
            ),
            pytest.param(
                ["jobs", "purge", "--all", "--older-than", "7d"], ["--all", "not both"], id="p-all"
            ),
            pytest.param(
                ["jobs", "retry", "--state", "done"], ["unknown state", "failed"], id="state"
            ),
        ],
    )
    def test_is_one_usage_line_naming_the_fix(
        self, db_url: str, mixed: dict[str, list[str]], args: list[str], words: list[str]
    ) -> None:
        """Nothing changes: a run that names no jobs, or a job id and filters, is refused."""
        result = cli(*args, "--url", db_url)

        assert_one_line_error(result, 2, *words)
        assert [JobState.FAILED] * 3 == states(db_url, mixed["failed"])
        assert [JobState.QUEUED] * 3 == states(db_url, mixed["later"] + mixed["queued"])


class TestBulkStopped:
    def test_a_store_failure_part_way_says_how_far_the_run_got(
        self, db_url: str, mixed: dict[str, list[str]]
    ) -> None:
        """The store fails after two retries: one line says so, and how to go on."""

        def run(store: Store, progress: Any) -> Any:
            failing = cast("Store", FailsAfter(store, 2))
            return admin.bulk_action(
                failing, "retry", JobFilter(tasks=("broken",)), progress=progress
            )

        with pytest.raises(CliError) as stopped:
            jobs_cli._bulk("retry", run, dry_run=False, as_json=False, url=db_url)

        assert "store unreachable; stopped after 2 of 3 jobs; run the command again" in str(
            stopped.value
        )
        assert 2 == states(db_url, mixed["failed"]).count(JobState.QUEUED)


class TestBulkOnRedis:
    def test_cancel_by_queue(self, runs: Path) -> None:
        prefix = f"cli-bulk-{uuid.uuid4().hex}"
        url = f"{REDIS_URL}?prefix={prefix}"
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.ping()
        except (OSError, redis.exceptions.ConnectionError) as exc:
            redis_unreachable(exc)
        finally:
            client.close()

        async def enqueue(s: CliJobs) -> tuple[list[str], str]:
            later = [(await s.nap.options(queue="later").enqueue(str(runs), 0.0)).id for _ in "abc"]
            return later, (await s.nap.enqueue(str(runs), 0.0)).id

        try:
            later, default = with_app(url, enqueue)
            dry = outcome("jobs", "cancel", "--queue", "later", "--dry-run", "--url", url)
            result = cli("jobs", "cancel", "--queue", "later", "--url", url)

            assert 3 == dry["matched"]
            assert (0, "cancelled 3 jobs\n") == (result.returncode, result.stdout), result.stderr
            assert [JobState.CANCELLED] * 3 == states(url, later)
            assert [JobState.QUEUED] == states(url, [default])
            listed = with_app(url, lambda s: s.app.store.list(JobFilter(queues=("later",)), 10))
            assert {JobState.CANCELLED} == {r.state for r in listed.jobs}
        finally:
            asyncio.run(drop_redis_keys(prefix))
