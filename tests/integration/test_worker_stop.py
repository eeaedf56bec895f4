"""``offload worker`` stopped by signals while jobs run, many times over, on SQLite and Redis.

A stop that drains must store every outcome the worker reports and leave within a second of
the last job; a second signal must end the process at once and hand its jobs back. Each case
runs a real worker process against a store of its own, several at a time, with a hard
timeout on every wait and every job's state checked afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offload import JobState, Offload
from offload.errors import StoreUnavailable
from offload.jobs import Job
from tests.conftest import IN_CI
from tests.integration import stopjobs
from tests.stores.conftest import REDIS_URL, drop_redis_keys

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.stopjobs:jobs"
RUNS = 20  # per store
AT_ONCE = 4  # worker processes stopped side by side
JOBS = 8
NAP = 1.0
GRACE = 10.0
SHORT_LEASE = 3.0
# Process start-up on a loaded 2-core machine; only waited out when something is broken.
START_TIMEOUT = 40.0


async def _redis_reachable() -> bool:
    app = Offload(f"{REDIS_URL}?prefix=test-probe-{uuid.uuid4().hex}", embedded_worker=False)
    try:
        await app.open()
    except StoreUnavailable as exc:
        if IN_CI:
            pytest.fail(f"Redis not reachable at 127.0.0.1:6379: {exc}")
        return False
    await app.close()
    return True


class Urls:
    """Fresh store URLs of one kind, one per case; the Redis ones' keys dropped after."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.prefixes: list[str] = []

    def __call__(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder / f'stop-{name}.db'}"
        prefix = f"test-stop-{uuid.uuid4().hex}"
        self.prefixes.append(prefix)
        return f"{REDIS_URL}?prefix={prefix}"


@pytest.fixture(params=["sqlite", "redis"])
async def urls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Urls]:
    if request.param == "redis" and not await _redis_reachable():
        pytest.skip("Redis not reachable at 127.0.0.1:6379")
    made = Urls(request.param, tmp_path)
    yield made
    for prefix in made.prefixes:
        await drop_redis_keys(prefix)


class Run:
    """One worker process, its store and its jobs."""

    def __init__(self, url: str, lease: float | None, log: Path) -> None:
        self.url = url
        self.lease = lease
        self.log = log
        self.app = Offload(url, embedded_worker=False)
        self.app.tasks = stopjobs.jobs.tasks
        self.jobs: list[Job[float]] = []
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, seconds: float) -> None:
        await self.app.open()
        self.jobs = list(
            await self.app.enqueue_many([stopjobs.nap.prepare(seconds) for _ in range(JOBS)])
        )
        args = ["--url", self.url, "--concurrency", str(JOBS), "--grace", str(GRACE)]
        if self.lease is not None:
            args += ["--lease", str(self.lease)]
        env = {k: v for k, v in os.environ.items() if k != "OFFLOAD_URL"}
        with self.log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "offload.cli", "worker", APP, *args, "--json-logs"],
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )

    async def all_running(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            states = [(await j.refresh()).state for j in self.jobs]
            if all(s is JobState.RUNNING for s in states):
                return
            assert self.proc is not None
            assert self.proc.returncode is None, self.stderr()
            await asyncio.sleep(0.05)
        raise AssertionError(f"jobs never all ran: {states}\n{self.stderr()}")

    async def signal_and_wait(self, signals: int, limit: float) -> float:
        """Send SIGTERM ``signals`` times; the seconds until the process had gone."""
        assert self.proc is not None
        began = time.monotonic()
        for _ in range(signals):
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
        try:
            code = await asyncio.wait_for(self.proc.wait(), limit)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"worker still up {limit} s after SIGTERM\n{self.stderr()}")
        took = time.monotonic() - began
        assert 0 == code, self.stderr()
        return took

    async def states(self) -> list[JobState]:
        return [(await j.refresh()).state for j in self.jobs]

    def stopped_line(self) -> dict[str, object]:
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("action") == "worker.stop":
                return dict(json.loads(line))
        raise AssertionError(f"no 'worker stopped' line\n{self.stderr()}")

    def stderr(self) -> str:
        return self.log.read_text()[-4000:]

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self.app.close()


async def drain_once(url: str, lease: float | None, log: Path) -> float:
    run = Run(url, lease, log)
    try:
        await run.start(NAP)
        await run.all_running()
        took = await run.signal_and_wait(1, GRACE + 1)
        line = run.stopped_line()
        assert JOBS == line["succeeded"], line
        assert "unsaved" not in line, line
        # Every outcome the worker reported is in the store.
        assert [JobState.SUCCEEDED] * JOBS == await run.states(), run.stderr()
        assert [NAP] * JOBS == [await j.result(timeout=1) for j in run.jobs]
        return took
    finally:
        await run.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sigterm_drains_stores_every_outcome_and_exits(urls: Urls, tmp_path: Path) -> None:
    """20 workers per store, half with the default lease and half with a short one, each
    SIGTERMed with 8 one-second jobs running: each exits 0 within a second of its jobs'
    end (and within grace + 1 s), with every job stored as succeeded."""
    took: list[float] = []
    for first in range(0, RUNS, AT_ONCE):
        cases = []
        for n in range(first, first + AT_ONCE):
            url = urls(str(n))
            lease = None if n % 2 == 0 else SHORT_LEASE
            cases.append(drain_once(url, lease, tmp_path / f"worker-{n}.log"))
        took += await asyncio.gather(*cases)
    # The jobs had at most NAP left when the signal came; the rest is the stop itself.
    assert max(took) < NAP + 1.0, sorted(took)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_second_sigterm_ends_at_once_and_hands_jobs_back(urls: Urls, tmp_path: Path) -> None:
    """Two SIGTERMs with 8 long jobs running: the worker leaves within a second, and its
    jobs are queued again (not left running until their leases lapse)."""
    run = Run(urls("kill"), SHORT_LEASE, tmp_path / "worker-kill.log")
    try:
        await run.start(60.0)
        await run.all_running()
        took = await run.signal_and_wait(2, 1.0 + 0.2)
        assert took < 1.2
        assert [JobState.QUEUED] * JOBS == await run.states(), run.stderr()
    finally:
        await run.close()
