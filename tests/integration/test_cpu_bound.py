"""cpu_bound tasks in the worker's process pool, against a real SQLite file and real processes:
a job that kills its process fails alone, a timed-out one gives its slot back at once, and a
task there gets the same context as anywhere else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from offload import Job, JobState, Offload, Worker, correlation
from offload.jobs import JobRecord
from offload.metrics import PrometheusObserver
from offload.observers import JobObserver
from tests.integration import cpujobs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[Offload]:
    """The task module's app on this test's SQLite file."""
    cpujobs.jobs.store = Offload(db_url, embedded_worker=False).store
    async with cpujobs.jobs:
        yield cpujobs.jobs


class Deaths(JobObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def process_died(self, record: JobRecord, exitcode: int) -> None:
        self.seen.append((record.task, exitcode))


@contextlib.asynccontextmanager
async def working(app: Offload, processes: int, concurrency: int = 8) -> AsyncIterator[Worker]:
    """A worker running in the test's loop while the block runs, drained after it."""
    worker = Worker(
        app, concurrency=concurrency, processes=processes, install_signals=False, lease=5
    )
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 15)


async def finished(job: Job[Any], timeout: float = 30) -> Job[Any]:
    deadline = time.monotonic() + timeout
    while not (await job.refresh()).state.finished:
        assert time.monotonic() < deadline, f"{job} did not finish"
        await asyncio.sleep(0.02)
    return job


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie not yet reaped by its parent has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


async def until_gone(pid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        await asyncio.sleep(0.02)


class TestProcessDeath:
    async def test_dead_processes_fail_only_their_jobs(
        self, app: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        """os._exit(1), SIGKILL and a segfault each fail their own job, with the exit code or
        signal in its error, and 20 healthy jobs enqueued with them all succeed on the same
        worker; each death is one log line and one observer event."""
        deaths = Deaths()
        app.observers.append(deaths)
        try:
            async with working(app, processes=2):
                dying = [await cpujobs.die.enqueue(how) for how in ("exit", "sigkill", "segfault")]
                healthy = await app.enqueue_many([cpujobs.square.prepare(n) for n in range(20)])
                results = [await job.result(timeout=60) for job in healthy]
                for job in dying:
                    await finished(job)
        finally:
            app.observers.remove(deaths)
        assert [n * n for n in range(20)] == results
        assert [JobState.FAILED] * 3 == [job.state for job in dying]
        errors = [(job.error.type, job.error.message) for job in dying if job.error]
        assert ("ProcessDied", "the process running this job died (exit code 1)") == errors[0]
        assert errors[1][1].startswith("the process running this job died (signal SIGKILL)")
        assert "out-of-memory" in errors[1][1]
        assert "the process running this job died (signal SIGSEGV)" == errors[2][1]
        assert sorted([(cpujobs.die.name, 1), (cpujobs.die.name, -9), (cpujobs.die.name, -11)]) == (
            sorted(deaths.seen)
        )
        lines = [r for r in caplog.records if getattr(r, "action", "") == "worker.process_died"]
        assert 3 == len(lines)
        assert {job.id for job in dying} == {getattr(r, "job_id", None) for r in lines}

    async def test_a_death_is_retried_by_the_tasks_policy(self, app: Offload) -> None:
        """A job whose process died is retried like any crash: its second attempt succeeds."""
        async with working(app, processes=1):
            job = await cpujobs.die_once.enqueue()
            assert 2 == await job.result(timeout=60)
        assert 2 == job.attempt

    async def test_deaths_are_counted_in_the_metrics(self, app: Offload) -> None:
        """offload_process_deaths_total counts deaths by task and queue."""
        registry = CollectorRegistry()
        observer = PrometheusObserver(app, registry)
        app.observers.append(observer)
        try:
            async with working(app, processes=1):
                await finished(await cpujobs.die.enqueue("exit"))
        finally:
            app.observers.remove(observer)
        labels = {"task": cpujobs.die.name, "queue": "default"}
        assert 1.0 == registry.get_sample_value("offload_process_deaths_total", labels)


class TestOutcomes:
    async def test_a_result_that_is_not_json_fails_at_once(self, app: Offload) -> None:
        """A result that cannot be stored fails the job at its first attempt, as it does for a
        task run in the worker: no retry would make it JSON."""
        async with working(app, processes=1):
            job = await finished(await cpujobs.unencodable.enqueue())
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert job.error is not None
        assert "TypeError" == job.error.type
        assert "cannot be stored as JSON" in job.error.message


class TestTimeout:
    async def test_timed_out_jobs_free_their_slots_at_once(
        self, app: Offload, tmp_path: Path
    ) -> None:
        """3 jobs past their timeout on a pool of 3 have their processes stopped, and the 3
        jobs queued behind them start within 1 s of the timeouts."""
        timeout = 1.5
        stalls = await app.enqueue_many(
            [
                cpujobs.stall.options(timeout=timeout).prepare(60, str(tmp_path / f"pid{i}"))
                for i in range(3)
            ]
        )
        good = await app.enqueue_many([cpujobs.started.prepare() for _ in range(3)])
        async with working(app, processes=3, concurrency=6):
            starts = [await job.result(timeout=30) for job in good]
            for job in stalls:
                await finished(job)
            for i in range(3):
                await until_gone(int((tmp_path / f"pid{i}").read_text()))
        assert [JobState.FAILED] * 3 == [job.state for job in stalls]
        assert all(job.error and job.error.type == "TimeoutError" for job in stalls)
        timed_out = max(job.record.started_at or 0 for job in stalls) + timeout
        late = [round(start - timed_out, 3) for start in starts]
        assert all(delay < 1.0 for delay in late), late


class TestContext:
    async def test_progress_meta_and_log_fields_reach_the_worker(
        self, app: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A cpu_bound task's ctx.meta holds the request id it was enqueued under, its progress
        is stored on the job, and its log lines carry the job's correlation fields."""
        caplog.set_level(logging.INFO)
        async with working(app, processes=1):
            with correlation.bound({correlation.REQUEST_ID: "req-cpu-1"}):
                job = await cpujobs.report.enqueue(3)
            result = await job.result(timeout=60)
        assert {"request_id": "req-cpu-1", "job_id": job.id} == result
        assert job.progress is not None
        assert (0.5, "half of 3") == (job.progress.fraction, job.progress.message)
        lines = [r for r in caplog.records if r.name == "tests.cpujobs"]
        assert ["crunching 3", "logged with its traceback"] == [r.getMessage() for r in lines]
        for line in lines:
            assert (job.id, cpujobs.report.name, "req-cpu-1") == (
                getattr(line, "job_id", None),
                getattr(line, "task", None),
                getattr(line, "request_id", None),
            )
        assert "ValueError: a handled error" in (lines[1].exc_text or "")


def run_script(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestMainScript:
    def test_task_in_the_script_being_run_says_to_move_it(
        self, db_url: str, tmp_path: Path
    ) -> None:
        """A cpu_bound task defined in the script being run fails at once with an error that
        says to put it in an importable module."""
        done = run_script(
            tmp_path,
            f"""
import asyncio

from offload import Offload, Worker

jobs = Offload({db_url!r}, embedded_worker=False)


@jobs.task(cpu_bound=True, retries=3)
def crunch(n: int) -> int:
    return n


async def main() -> None:
    async with jobs:
        worker = Worker(jobs, install_signals=False, processes=1)
        running = asyncio.create_task(worker.run())
        job = await crunch.enqueue(2)
        while not (await job.refresh()).state.finished:
            await asyncio.sleep(0.02)
        print(job.state, job.attempt, job.error.type)
        print(job.error.message)
        worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
""",
        )
        assert 0 == done.returncode, done.stderr
        state, message = done.stdout.splitlines()
        assert "failed 1 TaskNotImportable" == state
        assert "is defined in the script being run (`__main__`)" in message
        assert "move the task into a module of its own" in message
        assert "from tasks import crunch" in message

    def test_script_without_main_guard_says_to_add_it(self, db_url: str, tmp_path: Path) -> None:
        """A script that starts a worker without an `if __name__ == "__main__":` guard is
        refused in the pool's processes, and the job's error says to add the guard."""
        done = run_script(
            tmp_path,
            f"""
import asyncio

from offload import Offload, Worker
from tests.integration import cpujobs


async def main() -> None:
    cpujobs.jobs.store = Offload({db_url!r}, embedded_worker=False).store
    async with cpujobs.jobs:
        worker = Worker(cpujobs.jobs, install_signals=False, processes=1)
        running = asyncio.create_task(worker.run())
        job = await cpujobs.square.enqueue(2)
        while not (await job.refresh()).state.finished:
            await asyncio.sleep(0.02)
        print(job.state, job.error.type)
        print(job.error.message)
        worker.stop()
        await running


asyncio.run(main())
""",
        )
        assert 0 == done.returncode, done.stderr
        state, message = done.stdout.splitlines()
        assert "failed ProcessDied" == state
        assert "died while starting" in message
        assert 'under `if __name__ == "__main__":`' in message
        assert 'start the worker under `if __name__ == "__main__":`' in done.stderr


class TestWorkerKilled:
    async def test_pool_processes_end_with_their_worker(self, app: Offload, tmp_path: Path) -> None:
        """A worker killed outright (SIGKILL) takes its pool's processes with it, even one
        busy with a long job."""
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.cpujobs",
            url,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            pid_file = tmp_path / "pid"
            await cpujobs.stall.enqueue(60, str(pid_file))
            deadline = time.monotonic() + 30
            while not pid_file.exists() or not pid_file.read_text():
                assert time.monotonic() < deadline, "the job never started"
                await asyncio.sleep(0.05)
            child = int(pid_file.read_text())
            worker.send_signal(signal.SIGKILL)
            await asyncio.wait_for(worker.wait(), 10)
            await until_gone(child)
        finally:
            if worker.returncode is None:
                worker.kill()
                await asyncio.wait_for(worker.wait(), 10)


async def test_a_task_registered_in_a_factory_runs_in_the_pool(db_url: str) -> None:
    """The pool process finds a module-level function whose task was registered elsewhere
    (on an app built by a function), and a function defined inside one is refused at once."""
    app = Offload(db_url, embedded_worker=False)
    cube = app.task(name="tests.factory_cube", cpu_bound=True, retries=0)(cpujobs.cube)
    async with app, working(app, processes=1):
        job = await cube.enqueue(3)
        assert 27 == await job.result(timeout=60)

    def nested(n: int) -> int:
        return n

    with pytest.raises(TypeError, match="defined at module level"):
        app.task(name="tests.nested", cpu_bound=True)(nested)
