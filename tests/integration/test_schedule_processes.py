"""A schedule fires once per slot however many schedulers run, and a killed one loses none.

Five ``offload worker`` processes (each runs the scheduler) per store, SQLite and Redis at
the same time, for sixty one-second slots; one process per store is SIGKILLed partway. The
in-process store gets the same check with five schedulers on one loop and a test clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from offload import Offload
from offload.errors import StoreUnavailable
from offload.scheduler import Scheduler
from offload.schedules import slot_iso
from offload.stores import JobFilter, open_store
from offload.testing import Clock
from tests.integration.mpsched import TASK
from tests.stores.conftest import POSTGRES_URL, REDIS_URL, drop_postgres_schema

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.mpsched:jobs"
PROCESSES = 5
SLOTS = 60
KILL_AFTER = 20  # slots into the run
# Process start-up on a loaded 2-core machine; only waited out when something is broken.
START_TIMEOUT = 40.0


async def keys_by_slot(url: str) -> Counter[str]:
    """How many jobs the store holds for each slot of the schedule."""
    store = open_store(url)
    await store.open()
    try:
        seen: Counter[str] = Counter()
        cursor = None
        while True:
            page = await store.list(JobFilter(tasks=(TASK,)), 500, cursor)
            for job in page.jobs:
                assert f"schedule:tick:{job.meta['slot']}" == job.key
                seen[job.meta["slot"]] += 1
            cursor = page.next_cursor
            if cursor is None:
                return seen
    finally:
        await store.close()


async def redis_url() -> str | None:
    url = f"{REDIS_URL}?prefix=test-{uuid.uuid4().hex}"
    store = open_store(url)
    try:
        await store.open()
    except StoreUnavailable as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"Redis not reachable at 127.0.0.1:6379: {exc}")
        return None
    await store.close()
    return url


async def postgres_url() -> str | None:
    schema = f"test_{uuid.uuid4().hex}"
    url = f"{POSTGRES_URL}?schema={schema}"
    store = open_store(url)
    try:
        await store.open()  # creates the schema before five processes race to
    except StoreUnavailable as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
        return None
    await store.close()
    return url


def start(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "OFFLOAD_URL"}
    with log.open("wb") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "offload.cli",
                "worker",
                APP,
                "--url",
                url,
                "--concurrency",
                "2",
                "--json-logs",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@pytest.mark.slow
class TestSchedulerProcesses:
    @pytest.mark.timeout(150)
    async def test_each_slot_fires_once_on_every_store(self, tmp_path: Path) -> None:
        """Sixty one-second slots, five scheduler processes per store (SQLite, Redis,
        PostgreSQL): every slot has exactly one job, including the slots after one process
        per store was SIGKILLed."""
        urls = {"sqlite": f"sqlite:///{tmp_path / 'sched.db'}"}
        redis = await redis_url()
        if redis is not None:
            urls["redis"] = redis
        postgres = await postgres_url()
        if postgres is not None:
            urls["postgres"] = postgres
        # Create the SQLite schema before five processes race to.
        async with Offload(urls["sqlite"], embedded_worker=False):
            pass
        procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        logs: list[Path] = []
        try:
            for kind, url in urls.items():
                procs[kind] = []
                for n in range(PROCESSES):
                    logs.append(tmp_path / f"{kind}-{n}.log")
                    procs[kind].append(start(url, logs[-1]))
            deadline = time.monotonic() + START_TIMEOUT
            while not all("worker.start" in log.read_text() for log in logs):
                dead = [
                    log.read_text()
                    for p, log in zip(_all(procs), logs, strict=True)
                    if p.poll() is not None
                ]
                assert not dead, dead
                assert time.monotonic() < deadline, "workers did not start"
                await asyncio.sleep(0.2)
            first = math.ceil(time.time()) + 1
            await _sleep_until(first + KILL_AFTER + 0.5)
            for group in procs.values():
                group[0].send_signal(signal.SIGKILL)
            await _sleep_until(first + SLOTS + 1.5)
        finally:
            for p in _all(procs):
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            for p in _all(procs):
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        window = [slot_iso(float(first + n)) for n in range(SLOTS)]
        for kind, url in urls.items():
            seen = await keys_by_slot(url)
            assert dict.fromkeys(window, 1) == {slot: seen[slot] for slot in window}, kind
            assert all(1 == n for n in seen.values()), kind
        if postgres is not None:
            await drop_postgres_schema(postgres.split("schema=")[1])
        if redis is not None:
            await _drop_redis_keys(redis)
        missing = {"redis": redis, "postgres": postgres}
        if None in missing.values():
            gone = [kind for kind, url in missing.items() if url is None]
            pytest.skip(f"not reachable: {', '.join(gone)}; the other groups ran")


def _all(procs: dict[str, list[subprocess.Popen[bytes]]]) -> list[subprocess.Popen[bytes]]:
    return [p for group in procs.values() for p in group]


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(when - time.time(), 0.0))


async def _drop_redis_keys(url: str) -> None:
    import redis.asyncio

    prefix = url.split("prefix=")[1]
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        await client.delete(key)
    await client.aclose()


class TestSchedulersInOneProcess:
    async def test_five_schedulers_on_the_memory_store(self) -> None:
        """Five schedulers sharing an in-process store, ticking in random order each second
        (one stops for good at slot 20): every one of sixty slots fires exactly once."""
        clock = Clock(start=datetime(2026, 3, 29, 0, 59, tzinfo=UTC))
        jobs = Offload("memory://", clock=clock, embedded_worker=False)

        @jobs.periodic(every=timedelta(seconds=1), name="tick")
        @jobs.task(name=TASK)
        async def tick() -> None: ...

        schedulers = [Scheduler(jobs) for _ in range(PROCESSES)]
        first = clock()
        rng = random.Random(7)
        async with jobs:
            for n in range(SLOTS):
                clock._now = first + n + rng.random() * 0.9
                alive = schedulers[1:] if n >= KILL_AFTER else schedulers
                rng.shuffle(alive)
                await asyncio.gather(*(s.tick() for s in alive))
            page = await jobs.store.list(JobFilter(tasks=(TASK,)), 1000)
        seen = Counter(job.meta["slot"] for job in page.jobs)
        assert {slot_iso(first + n): 1 for n in range(SLOTS)} == dict(seen)
