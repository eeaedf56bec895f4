"""Rate and concurrency limits across worker processes, on a real SQLite file, Redis and
PostgreSQL (a prefix or schema of the test's own on the shared servers): every limit is
checked from the runs' recorded start and end times (``tests.integration.flowjobs``), not
from the store's own counts."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from offload import ConfigError, JobState, Offload
from offload.stores.base import ClaimRequest, JobFilter
from tests.integration import flowjobs
from tests.stores.conftest import REDIS_URL, drop_postgres_schema, drop_redis_keys, postgres_url

ROOT = Path(__file__).resolve().parents[2]
OFFLOAD = Path(sys.executable).with_name("offload")
LEASE = 2.0

Runs = dict[tuple[str, int], list[tuple[str, int, float]]]


def read_runs(path: Path) -> list[tuple[str, str, int, int, float]]:
    out = []
    for line in path.read_text().splitlines():
        kind, task, n, pid, at = line.split()
        out.append((kind, task, int(n), int(pid), float(at)))
    return out


def intervals(
    path: Path, task: str, end_of_killed: float = float("inf")
) -> list[tuple[float, float]]:
    """Each run of ``task`` as (start, end); a run with no end (its worker was killed) ends
    at ``end_of_killed``."""
    starts: dict[tuple[int, int], float] = {}
    spans = []
    for kind, name, n, pid, at in read_runs(path):
        if name != task:
            continue
        if kind == "S":
            starts[(n, pid)] = at
        else:
            spans.append((starts.pop((n, pid)), at))
    spans += [(start, end_of_killed) for start in starts.values()]
    return spans


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


class Workers:
    def __init__(self, url: str, runs: Path, log: Path) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "OFFLOAD_URL": url,
                    "FLOW_RUNS": str(runs)}  # fmt: skip
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int = 1) -> None:
        command = [str(OFFLOAD), "worker", "tests.integration.flowjobs:jobs",
                   "--concurrency", "16", "--lease", str(LEASE)]  # fmt: skip
        for _ in range(n):
            with self.log.open("ab") as out:
                self.procs.append(subprocess.Popen(command, cwd=ROOT, env=self.env,
                                                   stdout=out, stderr=out))  # fmt: skip

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Offload, Workers, Path]]:
    prefix = f"test_{uuid.uuid4().hex}"
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'jobs.db'}",
        "redis": f"{REDIS_URL}?prefix={prefix}",
        "postgres": postgres_url(prefix),
    }[request.param]
    runs = tmp_path / "runs"
    flowjobs.jobs.store = Offload(url, embedded_worker=False).store
    workers = Workers(url, runs, tmp_path / "workers.log")
    try:
        yield flowjobs.jobs, workers, runs
    finally:
        workers.stop()
        if request.param == "redis":
            asyncio.run(drop_redis_keys(prefix))
        if request.param == "postgres":
            asyncio.run(drop_postgres_schema(prefix))


async def until_done(app: Offload, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        page = await app.store.list(JobFilter(states=(JobState.SUCCEEDED,)), 1000)
        if len(page.jobs) >= count:
            return
        assert time.monotonic() < deadline, f"{len(page.jobs)} of {count} done"
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_rate_limit_holds_across_three_workers(
    setup: tuple[Offload, Workers, Path],
) -> None:
    app, workers, runs = setup
    async with app:
        await app.enqueue_many([flowjobs.rated.prepare(n) for n in range(200)])
        workers.start(3)
        await until_done(app, 200, 60)
    starts = sorted(s for s, _ in intervals(runs, "rated"))
    assert 200 == len(starts)
    worst = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert worst <= 20 + 1, f"{worst} starts within one second"
    assert starts[-1] - starts[0] >= (200 - 1) / 20 - 0.05
    assert len({pid for _, _, _, pid, _ in read_runs(runs)}) == 3  # all three took part


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_concurrency_limit_holds_and_a_killed_worker_gives_its_slot_back(
    setup: tuple[Offload, Workers, Path],
) -> None:
    app, workers, runs = setup
    async with app:
        await app.enqueue_many([flowjobs.paired.prepare(n) for n in range(60)])
        workers.start(3)
        await asyncio.sleep(0.5)
        victim = workers.procs[0]
        victim.kill()
        victim.wait()
        killed_at = time.time()
        await until_done(app, 60, 60)
    ended = [(s, e) for s, e in intervals(runs, "paired", end_of_killed=killed_at)]
    assert most_at_once(ended) <= 2
    # The slots of the killed worker's jobs were free again one lease after its last
    # renewal: nothing stalled for much longer than that.
    starts = sorted(s for s, _ in ended)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) < LEASE + 2.0, f"a gap of {max(gaps):.1f} s between starts"


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_concurrency_key_separates_users(setup: tuple[Offload, Workers, Path]) -> None:
    app, workers, runs = setup
    async with app:
        users = "abc"
        await app.enqueue_many([flowjobs.per_user.prepare(u, n) for n in range(10) for u in users])
        workers.start(3)
        await until_done(app, 30, 60)
    together = []
    for user in users:
        spans = intervals(runs, f"user-{user}")
        assert 10 == len(spans)
        assert 1 == most_at_once(spans), user
        together += spans
    assert most_at_once(together) > 1  # different users did run at once


async def test_a_store_that_cannot_enforce_limits_refuses_a_limited_task() -> None:
    jobs = Offload("memory://", embedded_worker=False)

    @jobs.task(rate_limit="5/s")
    async def limited() -> None:
        return None

    with pytest.raises(ConfigError, match="rate or concurrency limit"):
        await limited.enqueue()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"rate_limit": "fast"}, "write jobs per period"),
        ({"rate_limit": "0/s"}, "must be positive"),
        ({"rate_limit": "5/s", "burst": 0}, "burst must be"),
        ({"burst": 3}, "need rate_limit="),
        ({"concurrency": 0}, "concurrency must be"),
        ({"concurrency_key": str}, "needs concurrency="),
    ],
)
def test_bad_limits_are_refused_at_declaration(
    tmp_path: Path, options: dict[str, object], words: str
) -> None:
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)
    with pytest.raises(ValueError, match=words):
        jobs.task(**options)(lambda: None)  # type: ignore[call-overload]


async def test_a_key_function_that_fails_is_a_clear_type_error(tmp_path: Path) -> None:
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)

    @jobs.task(concurrency=1, concurrency_key=lambda user: user["id"])
    async def per_user(user: dict[str, int]) -> None:
        return None

    async with jobs:
        with pytest.raises(TypeError, match="concurrency_key raised KeyError"):
            await per_user.enqueue({"name": 1})
        job = await per_user.enqueue({"id": 7})
        assert JobState.QUEUED is job.state


async def test_a_held_job_says_why_over_http_and_on_the_dashboard(tmp_path: Path) -> None:
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)

    @jobs.task(name="tests.one_at_a_time", concurrency=1)
    async def one_at_a_time(n: int) -> None:
        return None

    app = FastAPI()
    app.include_router(jobs.router(allow_anonymous=True), prefix="/jobs")
    app.include_router(jobs.dashboard(allow_anonymous=True), prefix="/dashboard")
    async with jobs:
        first, second = [await one_at_a_time.enqueue(n) for n in range(2)]
        assert [first.id] == [j.id for j in await jobs.store.claim(ClaimRequest("w", 30, 5))]
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            status = (await client.get(f"/jobs/{second.id}")).json()
            assert ("queued", "concurrency") == (status["state"], status["waiting_reason"])
            page = (await client.get(f"/dashboard/jobs/{second.id}")).text
            assert 'data-waiting="concurrency"' in page
