"""The ``offload`` command line, run as a real process against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from offload import JobState, Worker
from offload.cli import app as cli_app
from offload.cli._common import CliError, mask_url, parse_duration
from offload.cli.jobs import app as jobs_app
from offload.jobs import JobRecord
from offload.stores import ClaimRequest
from tests.acceptance.clijobs import CliJobs, build
from tests.stores.conftest import REDIS_URL, redis_unreachable

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.clijobs:jobs"
# Generous bounds for process start-up and shutdown on a loaded CI machine; the tests only
# wait this long when something is broken.
START_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OFFLOAD_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args],
        cwd=ROOT,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def with_app(url: str, fn: Callable[[CliJobs], Awaitable[T]]) -> T:
    """Run ``fn`` against the test's store in a short-lived loop of its own."""

    async def go() -> T:
        suite = build(url)
        async with suite.app:
            return await fn(suite)

    return asyncio.run(go())


def get(url: str, job_id: str) -> JobRecord:
    record = with_app(url, lambda s: s.app.store.get(job_id))
    assert record is not None
    return record


def run_until_idle(url: str) -> None:
    """Run due jobs in this process, so listing tests need no worker process."""

    async def go(suite: CliJobs) -> int:
        return await Worker(suite.app, install_signals=False).run_until_idle()

    with_app(url, go)


def wait_until(check: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def json_logs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path) if line.startswith("{")]


class WorkerProcess:
    """An ``offload worker`` child with its stderr (the JSON logs) kept in a file."""

    def __init__(self, url: str, stderr: Path, *options: str) -> None:
        self.stderr_path = stderr
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "offload.cli",
                "worker",
                APP,
                "--url",
                url,
                "--json-logs",
                *options,
            ],
            cwd=ROOT,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def logged(self, action: str) -> bool:
        return any(entry.get("action") == action for entry in json_logs(self.stderr_path))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; any still alive at the end of the test is killed."""
    started: list[WorkerProcess] = []

    def start(*options: str) -> WorkerProcess:
        worker = WorkerProcess(db_url, tmp_path / f"worker-{len(started)}.log", *options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.ensure_dead()


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """The file the test tasks append a line to at each start and finish."""
    return tmp_path / "runs.txt"


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert code == result.returncode, result.stderr
    assert "Traceback" not in result.stderr
    assert 1 == len(result.stderr.strip().splitlines()), result.stderr
    assert result.stderr.startswith("error: ")
    for word in words:
        assert word in result.stderr


# --- the worker ----------------------------------------------------------------------------


@pytest.mark.slow
class TestWorker:
    def test_sigterm_drains_the_running_job_then_exits_zero(
        self, db_url: str, runs: Path, workers: Callable[..., WorkerProcess]
    ) -> None:
        """SIGTERM stops claiming, lets a 1 s job finish, and the process exits 0."""
        job = with_app(db_url, lambda s: s.nap.enqueue(str(runs), 1.0))
        worker = workers("--lease", "5", "--grace", "10", "--log-level", "DEBUG")
        wait_until(lambda: len(lines(runs)) == 1)

        worker.signal(signal.SIGTERM)

        assert 0 == worker.wait()
        record = get(db_url, job.id)
        assert JobState.SUCCEEDED == record.state
        assert '"slept 1.0"' == record.result
        assert [f"start {job.id} 1", f"done {job.id} 1"] == lines(runs)
        actions = [entry.get("action") for entry in json_logs(worker.stderr_path)]
        assert {"worker.start", "worker.drain", "job.succeeded", "worker.stop"} <= set(actions)

    def test_logs_are_json_objects_with_the_job_id(
        self, db_url: str, runs: Path, workers: Callable[..., WorkerProcess]
    ) -> None:
        """Each log line is one JSON object carrying the record's extra fields."""
        job = with_app(db_url, lambda s: s.nap.enqueue(str(runs), 0.0))
        worker = workers("--lease", "5", "--log-level", "DEBUG")
        wait_until(lambda: get(db_url, job.id).state is JobState.SUCCEEDED)
        worker.signal(signal.SIGTERM)
        assert 0 == worker.wait()

        entries = json_logs(worker.stderr_path)
        assert len(lines(worker.stderr_path)) == len(entries)
        succeeded = [e for e in entries if e.get("action") == "job.succeeded"]
        assert [job.id] == [e["job_id"] for e in succeeded]
        assert {"event", "level", "timestamp", "logger"} <= set(succeeded[0])

    def test_at_info_a_successful_job_writes_no_line(
        self, db_url: str, runs: Path, workers: Callable[..., WorkerProcess]
    ) -> None:
        """Successes are DEBUG (see docs/observability.md): the default shows the worker only."""
        job = with_app(db_url, lambda s: s.nap.enqueue(str(runs), 0.0))
        worker = workers("--lease", "5")
        wait_until(lambda: get(db_url, job.id).state is JobState.SUCCEEDED)
        worker.signal(signal.SIGTERM)
        assert 0 == worker.wait()

        actions = {e.get("action") for e in json_logs(worker.stderr_path)}
        assert {"worker.start", "worker.stop"} <= actions
        assert "job.succeeded" not in actions

    def test_second_signal_stops_at_once_and_requeues_the_job(
        self, db_url: str, runs: Path, workers: Callable[..., WorkerProcess]
    ) -> None:
        """A second SIGINT cuts the drain short; the interrupted job is queued again."""
        job = with_app(db_url, lambda s: s.nap.enqueue(str(runs), 30.0))
        worker = workers("--lease", "5", "--grace", "30")
        wait_until(lambda: len(lines(runs)) == 1)
        worker.signal(signal.SIGINT)
        wait_until(lambda: worker.logged("worker.drain"))

        began = time.monotonic()
        worker.signal(signal.SIGINT)

        assert 0 == worker.wait()
        assert time.monotonic() - began < 10
        record = get(db_url, job.id)
        assert JobState.QUEUED == record.state
        assert [f"start {job.id} 1"] == lines(runs)
        assert worker.logged("job.requeued")

    def test_stuck_sync_task_does_not_keep_the_process_alive(
        self, db_url: str, runs: Path, workers: Callable[..., WorkerProcess]
    ) -> None:
        """After a second SIGTERM the process exits although a sync task's thread still
        sleeps; its job is queued again."""
        job = with_app(db_url, lambda s: s.block.enqueue(str(runs), 30.0))
        worker = workers("--lease", "5", "--grace", "30")
        wait_until(lambda: len(lines(runs)) == 1)
        worker.signal(signal.SIGTERM)
        wait_until(lambda: worker.logged("worker.drain"))

        began = time.monotonic()
        worker.signal(signal.SIGTERM)

        assert 0 == worker.wait()
        assert time.monotonic() - began < 10
        assert JobState.QUEUED == get(db_url, job.id).state
        assert worker.logged("worker.abandon_threads")

    def test_queues_option_limits_what_the_worker_takes(
        self, db_url: str, runs: Path, workers: Callable[..., WorkerProcess]
    ) -> None:
        """A worker given --queues leaves jobs of other queues queued."""

        async def enqueue(s: CliJobs) -> tuple[str, str]:
            mail = await s.nap.options(queue="mail").enqueue(str(runs), 0.0)
            other = await s.nap.options(queue="reports").enqueue(str(runs), 0.0)
            return mail.id, other.id

        mail_id, other_id = with_app(db_url, enqueue)
        worker = workers("--lease", "5", "--queues", "mail,sms")
        wait_until(lambda: get(db_url, mail_id).state is JobState.SUCCEEDED)
        worker.signal(signal.SIGTERM)
        assert 0 == worker.wait()

        assert JobState.QUEUED == get(db_url, other_id).state


@pytest.mark.slow
class TestCrashRecovery:
    def test_jobs_of_a_sigkilled_worker_run_on_another_after_the_lease(
        self, db_url: str, runs: Path, workers: Callable[..., WorkerProcess]
    ) -> None:
        """SIGKILL mid-job loses nothing: once the 1 s lease lapses a second worker runs
        every job again (attempt 2) and each succeeds exactly once."""

        async def enqueue(s: CliJobs) -> list[str]:
            return [(await s.nap.enqueue(str(runs), 0.5)).id for _ in range(5)]

        ids = with_app(db_url, enqueue)
        first = workers("--lease", "1")
        wait_until(lambda: len(lines(runs)) == 5)

        first.signal(signal.SIGKILL)
        assert -signal.SIGKILL == first.wait()
        second = workers("--lease", "1")
        wait_until(lambda: all(get(db_url, i).state is JobState.SUCCEEDED for i in ids))
        second.signal(signal.SIGTERM)
        assert 0 == second.wait()

        log = lines(runs)
        assert sorted(f"start {i} 1" for i in ids) == sorted(x for x in log if x.endswith(" 1"))
        assert sorted(f"start {i} 2" for i in ids) == sorted(
            x for x in log if x.startswith("start") and x.endswith(" 2")
        )
        assert sorted(f"done {i} 2" for i in ids) == sorted(x for x in log if x.startswith("done"))
        assert [2] * 5 == [get(db_url, i).attempt for i in ids]


# --- reading and changing jobs -----------------------------------------------------------


@pytest.fixture
def finished(db_url: str, runs: Path) -> dict[str, str]:
    """One succeeded, one failed and one queued job (on queue "later")."""

    async def enqueue(s: CliJobs) -> dict[str, str]:
        ok = await s.nap.enqueue(str(runs), 0.0)
        bad = await s.broken.enqueue(str(runs))
        return {"ok": ok.id, "bad": bad.id}

    ids = with_app(db_url, enqueue)
    run_until_idle(db_url)
    later = with_app(db_url, lambda s: s.nap.options(queue="later").enqueue(str(runs), 0.0))
    return {**ids, "queued": later.id}


class TestJobsList:
    def test_json_lists_every_job_newest_first(self, db_url: str, finished: dict[str, str]) -> None:
        """--json prints the page as JSON with each job's state."""
        result = cli("jobs", "list", "--url", db_url, "--json")

        assert 0 == result.returncode, result.stderr
        data = json.loads(result.stdout)
        assert [finished["queued"], finished["bad"], finished["ok"]] == [
            j["id"] for j in data["jobs"]
        ]
        assert ["queued", "failed", "succeeded"] == [j["state"] for j in data["jobs"]]
        assert "RuntimeError" == data["jobs"][1]["error"]["type"]
        assert data["next_cursor"] is None

    def test_filters_by_state_task_and_queue(self, db_url: str, finished: dict[str, str]) -> None:
        """--state, --task and --queue narrow the listing."""
        by_state = cli("jobs", "list", "--url", db_url, "--json", "--state", "failed,queued")
        by_task = cli("jobs", "list", "--url", db_url, "--json", "--task", "nap")
        by_queue = cli("jobs", "list", "--url", db_url, "--json", "--queue", "later")

        def ids(result: subprocess.CompletedProcess[str]) -> set[str]:
            return {j["id"] for j in json.loads(result.stdout)["jobs"]}

        assert {finished["bad"], finished["queued"]} == ids(by_state)
        assert {finished["ok"], finished["queued"]} == ids(by_task)
        assert {finished["queued"]} == ids(by_queue)

    def test_limit_and_cursor_page_through(self, db_url: str, finished: dict[str, str]) -> None:
        """--limit cuts a page; --cursor with the printed cursor gives the next one."""
        page = ("jobs", "list", "--url", db_url, "--json", "--limit", "2")
        first = json.loads(cli(*page).stdout)
        second = json.loads(cli(*page, "--cursor", first["next_cursor"]).stdout)

        assert [finished["queued"], finished["bad"]] == [j["id"] for j in first["jobs"]]
        assert [finished["ok"]] == [j["id"] for j in second["jobs"]]
        assert second["next_cursor"] is None

    def test_table_by_default(self, db_url: str, finished: dict[str, str]) -> None:
        """Without --json the jobs come as a table naming each job's task and state."""
        result = cli("jobs", "list", "--url", db_url, "--state", "failed")

        assert 0 == result.returncode, result.stderr
        assert "broken" in result.stdout
        assert "failed" in result.stdout
        assert "succeeded" not in result.stdout

    def test_url_falls_back_to_the_environment(self, db_url: str, finished: dict[str, str]) -> None:
        """Without --url the store comes from $OFFLOAD_URL."""
        result = cli("jobs", "list", "--json", env=cli_env(OFFLOAD_URL=db_url))

        assert 3 == len(json.loads(result.stdout)["jobs"])


class TestJobsShow:
    def test_json_has_result_error_and_traceback(
        self, db_url: str, finished: dict[str, str]
    ) -> None:
        """--json shows every field, with the result decoded and the full traceback."""
        ok = json.loads(cli("jobs", "show", finished["ok"], "--url", db_url, "--json").stdout)
        bad = json.loads(cli("jobs", "show", finished["bad"], "--url", db_url, "--json").stdout)

        assert "slept 0.0" == ok["result"]
        assert "succeeded" == ok["state"]
        assert 0.0 == ok["kwargs"]["seconds"]
        assert {"type": "RuntimeError", "message": "broken on purpose"} == {
            k: bad["error"][k] for k in ("type", "message")
        }
        assert "Traceback" in bad["error"]["traceback"]
        assert {"progress", "meta", "attempt", "max_attempts", "worker_id"} <= set(bad)

    def test_text_shows_the_traceback(self, db_url: str, finished: dict[str, str]) -> None:
        """The default view ends with the stored traceback of a failed job."""
        result = cli("jobs", "show", finished["bad"], "--url", db_url)

        assert 0 == result.returncode, result.stderr
        assert "RuntimeError: broken on purpose" in result.stdout
        assert 'raise RuntimeError("broken on purpose")' in result.stdout

    def test_app_option_decodes_with_the_task_types(
        self, db_url: str, finished: dict[str, str]
    ) -> None:
        """--app loads the application so results are decoded by their task."""
        result = cli("jobs", "show", finished["ok"], "--url", db_url, "--json", "--app", APP)

        assert "slept 0.0" == json.loads(result.stdout)["result"]


class TestJobsRetry:
    def test_failed_job_is_queued_again(self, db_url: str, finished: dict[str, str]) -> None:
        """retry puts a failed job back in the queue."""
        result = cli("jobs", "retry", finished["bad"], "--url", db_url)

        assert 0 == result.returncode, result.stderr
        assert JobState.QUEUED == get(db_url, finished["bad"]).state

    def test_running_job_is_refused(self, db_url: str, runs: Path) -> None:
        """A running job cannot be retried: one line says which states can."""

        async def claimed(s: CliJobs) -> str:
            job = await s.nap.enqueue(str(runs), 0.0)
            await s.app.store.claim(ClaimRequest("w-test", 60.0))
            return job.id

        job_id = with_app(db_url, claimed)

        result = cli("jobs", "retry", job_id, "--url", db_url)

        assert_one_line_error(result, 1, "running", "failed or cancelled")
        assert JobState.RUNNING == get(db_url, job_id).state


class TestJobsDelete:
    def test_finished_job_is_deleted(self, db_url: str, finished: dict[str, str]) -> None:
        """delete removes a finished job; the job is gone afterwards."""
        result = cli("jobs", "delete", finished["ok"], "--url", db_url)

        assert (0, f"job {finished['ok']} (succeeded) deleted\n") == (
            result.returncode,
            result.stdout,
        ), result.stderr
        assert with_app(db_url, lambda s: s.app.store.get(finished["ok"])) is None

    def test_running_job_is_refused(self, db_url: str, runs: Path) -> None:
        """A running job is not deleted: one line says to cancel it first."""

        async def claimed(s: CliJobs) -> str:
            job = await s.nap.enqueue(str(runs), 0.0)
            await s.app.store.claim(ClaimRequest("w-test", 60.0))
            return job.id

        job_id = with_app(db_url, claimed)

        result = cli("jobs", "delete", job_id, "--url", db_url)

        assert_one_line_error(result, 1, "running", "cancel it")
        assert JobState.RUNNING == get(db_url, job_id).state


class TestJobsCancel:
    def test_queued_job_is_cancelled(self, db_url: str, finished: dict[str, str]) -> None:
        """cancel ends a queued job at once."""
        result = cli("jobs", "cancel", finished["queued"], "--url", db_url)

        assert 0 == result.returncode, result.stderr
        assert JobState.CANCELLED == get(db_url, finished["queued"]).state

    def test_finished_job_is_refused(self, db_url: str, finished: dict[str, str]) -> None:
        """Cancelling a job that already succeeded fails with one line."""
        result = cli("jobs", "cancel", finished["ok"], "--url", db_url)

        assert_one_line_error(result, 1, "succeeded")


class TestJobsPurge:
    def test_deletes_only_finished_jobs_older_than_the_duration(
        self, db_url: str, finished: dict[str, str]
    ) -> None:
        """purge keeps recent and unfinished jobs and deletes finished ones past the age."""
        recent = cli("jobs", "purge", "--older-than", "1h", "--url", db_url, "--json")
        time.sleep(0.05)
        old = cli("jobs", "purge", "--older-than", "0s", "--url", db_url, "--json")

        assert {"purged": 0} == json.loads(recent.stdout)
        assert {"purged": 2} == json.loads(old.stdout)
        remaining = json.loads(cli("jobs", "list", "--url", db_url, "--json").stdout)
        assert [finished["queued"]] == [j["id"] for j in remaining["jobs"]]

    def test_bad_duration_is_a_usage_error(self, db_url: str) -> None:
        """An unparseable --older-than names the accepted forms."""
        result = cli("jobs", "purge", "--older-than", "a week", "--url", db_url)

        assert_one_line_error(result, 2, "7d")


class TestInfo:
    def test_json_counts_per_queue_and_state(self, db_url: str, finished: dict[str, str]) -> None:
        """info --json gives counts per queue and state, and totals."""
        result = cli("info", "--url", db_url, "--json")

        assert 0 == result.returncode, result.stderr
        data = json.loads(result.stdout)
        assert db_url == data["url"]
        assert {"queued": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0} == data[
            "queues"
        ]["later"]
        assert {"queued": 1, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0} == data[
            "totals"
        ]

    def test_table_by_default(self, db_url: str, finished: dict[str, str]) -> None:
        """Without --json, info prints the store and a row per queue."""
        result = cli("info", "--url", db_url)

        assert 0 == result.returncode, result.stderr
        assert f"store: {db_url}" in result.stdout
        assert "later" in result.stdout


# --- errors ----------------------------------------------------------------------------------


class TestErrors:
    @pytest.mark.parametrize(
        ("args", "code", "words"),
        [
            pytest.param(["jobs", "list", "--url", "nonsense"], 2, ["store URL"], id="bad-url"),
            pytest.param(["worker", "no_such_module:jobs"], 2, ["not found"], id="no-module"),
            pytest.param(
                ["worker", "tests.acceptance.clijobs:nope"], 2, ["no attribute"], id="no-attr"
            ),
            pytest.param(
                ["worker", "tests.acceptance.clijobs:build"], 2, ["not an Offload"], id="not-app"
            ),
            pytest.param(["worker", "tests.acceptance.clijobs"], 2, ["MODULE:ATTR"], id="no-colon"),
            pytest.param(["jobs", "show", "0000"], 1, ["no job", "jobs list"], id="unknown-job"),
            pytest.param(["jobs", "retry", "0000"], 1, ["no job"], id="retry-unknown"),
            pytest.param(["jobs", "cancel", "0000"], 1, ["no job"], id="cancel-unknown"),
            pytest.param(
                ["jobs", "list", "--state", "done"], 2, ["unknown state", "succeeded"], id="state"
            ),
            pytest.param(["jobs", "show"], 2, ["JOB_ID", "--help"], id="missing-argument"),
            pytest.param(["worker", APP, "--log-level", "LOUD"], 2, ["log level"], id="level"),
            pytest.param(
                ["worker", "tests.acceptance.missing_module:jobs"], 2, ["not found"], id="no-sub"
            ),
            pytest.param(["mail-sink", "--host", "0.0.0.0"], 2, ["loopback"], id="sink-host"),
        ],
    )
    def test_expected_errors_print_one_line(
        self, db_url: str, args: list[str], code: int, words: list[str]
    ) -> None:
        """Each expected error is one line on stderr naming the fix, with no traceback."""
        if args[0] == "jobs" and "--url" not in args:
            args = [*args, "--url", db_url]

        result = cli(*args)

        assert_one_line_error(result, code, *words)

    def test_a_file_of_a_newer_layout_names_the_fix(self, tmp_path: Path) -> None:
        """A SQLite file written by a newer offload: one line saying to upgrade, exit 2."""
        path = tmp_path / "newer.db"
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 1000")
        conn.commit()
        conn.close()

        result = cli("jobs", "list", "--url", f"sqlite:///{path}")

        assert_one_line_error(result, 2, "newer offload", "upgrade offload")

    def test_redis_data_of_a_newer_layout_names_the_fix(self) -> None:
        """Redis data written by a newer offload: one line saying to upgrade, exit 2."""
        prefix = f"cli-{uuid.uuid4().hex}"
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.set(f"{{{prefix}}}:layout", 1000)
        except (OSError, redis.exceptions.ConnectionError) as exc:
            redis_unreachable(exc)
        try:
            result = cli("jobs", "list", "--url", f"{REDIS_URL}?prefix={prefix}")
        finally:
            client.delete(f"{{{prefix}}}:layout")
            client.close()

        assert_one_line_error(result, 2, "newer offload", "upgrade offload")

    def test_a_file_that_is_not_sqlite_stops_the_worker_with_the_fix(self, tmp_path: Path) -> None:
        """Not an outage to wait out: the worker exits at once, exit 2, one line."""
        path = tmp_path / "notes.db"
        path.write_text("not a database, just a file that happens to be here\n" * 100)

        result = cli("worker", APP, "--url", f"sqlite:///{path}")

        assert_one_line_error(result, 2, "not a database", "another file")

    def test_no_command_prints_help(self) -> None:
        """Bare ``offload`` shows the commands and exits as a usage error."""
        result = cli()

        assert 2 == result.returncode
        assert "worker" in result.stdout
        assert "jobs" in result.stdout


# --- documentation --------------------------------------------------------------------------


DOC = ROOT / "docs" / "cli.md"


COMMANDS = [
    "worker",
    "jobs list",
    "jobs show",
    "jobs retry",
    "jobs cancel",
    "jobs delete",
    "jobs purge",
    "info",
    "migrate",
    "mail-sink",
    "dashboard",
]


class TestDocs:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command_has_an_example(self, command: str) -> None:
        """docs/cli.md shows each command in a shell example."""
        examples = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)

        assert any(f"offload {command}" in example for example in examples)

    def test_the_list_above_is_every_command(self) -> None:
        """The documentation check covers every command the CLI has."""
        top = {c.name for c in cli_app.registered_commands}
        nested = {f"jobs {c.name}" for c in jobs_app.registered_commands}

        assert set(COMMANDS) == top | nested


# --- pure helpers ---------------------------------------------------------------------------


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("30s", 30.0), ("15m", 900.0), ("12h", 43200.0), ("7d", 604800.0), ("1.5h", 5400.0)],
    )
    def test_units(self, text: str, seconds: float) -> None:
        """Durations are a number and one of s, m, h, d, w."""
        assert seconds == parse_duration(text)

    @pytest.mark.parametrize("text", ["", "7", "d", "-1d", "7 days", "1e3s"])
    def test_rejects_other_forms(self, text: str) -> None:
        """Anything else is a usage error."""
        with pytest.raises(CliError) as info:
            parse_duration(text)
        assert 2 == info.value.code


class TestMaskUrl:
    def test_password_is_masked(self) -> None:
        """A password in the URL never reaches the output."""
        assert "postgresql://app:***@db.example:5432/jobs" == mask_url(
            "postgresql://app:s3cret@db.example:5432/jobs"
        )

    def test_url_without_password_is_unchanged(self) -> None:
        """URLs without credentials print as given."""
        assert "redis://localhost:6379/0" == mask_url("redis://localhost:6379/0")
