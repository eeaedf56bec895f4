"""Several processes on one SQLite file: no job lost, none run twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offload import JobState, Offload
from tests.integration import mpjobs

ROOT = Path(__file__).resolve().parents[2]


def spawn(args: list[str], url: str, runs: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OFFLOAD_URL": url, "RUNS_DIR": str(runs), "PYTHONPATH": str(ROOT)}
    with open(runs / f"stderr-{args[0]}-{time.monotonic_ns()}.log", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.mpjobs", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def read_runs(runs: Path) -> list[int]:
    out: list[int] = []
    for f in runs.glob("runs-*.txt"):
        out += [int(line) for line in f.read_text().split()]
    return out


@pytest.mark.slow
class TestSharedFile:
    @pytest.mark.timeout(120)
    async def test_two_workers_one_producer_every_job_exactly_once(
        self, db_url: str, tmp_path: Path
    ) -> None:
        """2 worker processes and 1 producer process share one file: 10,000 jobs, each run
        exactly once and recorded as succeeded."""
        runs = tmp_path / "runs"
        runs.mkdir()
        total = 10_000
        # Create the schema before three processes race to.
        async with Offload(db_url, embedded_worker=False):
            pass
        workers = [spawn(["work", "32"], db_url, runs) for _ in range(2)]
        # Both workers claiming before any job exists: one still starting could otherwise
        # miss every job, or meet the SIGTERM below before its handler is in place.
        for _ in range(600):  # 30 s
            if len(list(runs.glob("ready-*"))) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(list(runs.glob("ready-*"))) == 2, [f.read_text() for f in runs.glob("stderr-*")]
        producer = spawn(["produce", str(total), "100"], db_url, runs)
        assert 0 == producer.wait(60), [f.read_text() for f in runs.glob("stderr-produce*")]
        store_app = Offload(db_url, embedded_worker=False)
        async with store_app:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                counts = await store_app.store.counts()
                if counts.get(("default", JobState.SUCCEEDED), 0) == total:
                    break
                await asyncio.sleep(0.1)
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                assert 0 == w.wait(30)
            counts = await store_app.store.counts()
        done = read_runs(runs)
        assert {("default", JobState.SUCCEEDED): total} == counts
        assert total == len(done)
        assert set(range(total)) == set(done)
        assert len(list(runs.glob("runs-*.txt"))) == 2, "both workers took part"


class TestProcessPool:
    async def test_cpu_bound_task_runs_in_a_child_process(self, db_url: str) -> None:
        """A cpu_bound task runs in the process pool; only its name and JSON cross over."""
        os.environ["OFFLOAD_URL"] = db_url
        try:
            app = mpjobs.jobs
            app.store = Offload(db_url).store
            async with app:
                from offload import Worker

                w = Worker(app, install_signals=False, processes=1)
                runner = asyncio.create_task(w.run())
                await w.started.wait()
                job = await mpjobs.fib.enqueue(20)
                assert 6765 == await job.result(timeout=60)
                w.stop()
                await runner
        finally:
            os.environ.pop("OFFLOAD_URL", None)
