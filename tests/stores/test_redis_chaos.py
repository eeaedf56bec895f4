"""The Redis store under faults: killed workers and a Redis crash lose no acknowledged job.

Real processes against a real server. A duplicate run is allowed only after a fault hit the
job in flight (DESIGN §1.2), so every run is recorded and each duplicate is traced to a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from offload import JobState
from offload.errors import StoreUnavailable
from offload.stores import Store, open_store
from tests.stores.conftest import OwnRedis, drop_redis_keys, redis_unreachable
from tests.stores.redis_helpers import TASK, make_app, read_acked, read_runs, spawn

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SHARED = "redis://127.0.0.1:6379/0"


async def _succeeded(store: Store) -> int:
    try:
        counts = await store.counts()
    except StoreUnavailable:
        return 0
    return sum(n for (_, s), n in counts.items() if s is JobState.SUCCEEDED)


async def _all_done(store: Store, total: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if await _succeeded(store) >= total:
            return True
        await asyncio.sleep(0.2)
    return False


def _await_exit(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """Let processes that are done with their work exit on their own (a producer may still
    be closing its store when the last job finishes), so a SIGTERM does not cut them short."""
    deadline = time.monotonic() + timeout
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
async def shared_url() -> AsyncIterator[str]:
    prefix = f"chaos-{uuid.uuid4().hex}"
    client = redis.asyncio.Redis.from_url(SHARED)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        redis_unreachable(exc)
    await client.aclose()
    try:
        yield f"{SHARED}?prefix={prefix}"
    finally:
        await drop_redis_keys(prefix)


class TestWorkerKills:
    # Above the run's own 90 s deadline, so a slow run fails on an assertion that says what
    # was left, not on the suite's 60 s limit.
    @pytest.mark.timeout(150)
    async def test_killed_workers_lose_no_job(self, shared_url: str, tmp_path: Path) -> None:
        """3 workers and 2 producers run 20,000 jobs while a worker is SIGKILLed every 2 s
        and replaced: every acknowledged job succeeds, and every job that ran twice had its
        earlier run in a worker that was killed."""
        total, per_producer = 20_000, 10_000
        log = tmp_path / "stderr.log"
        acked = tmp_path / "acked"
        runs = [tmp_path / f"runs-{i}" for i in range(100)]
        slot = iter(runs)
        workers = [spawn("worker", shared_url, str(next(slot)), log=log) for _ in range(3)]
        producers = [
            spawn("producer", shared_url, str(i * per_producer), str(per_producer), str(acked),
                  log=log)
            for i in range(2)
        ]  # fmt: skip
        killed: set[int] = set()
        store = open_store(shared_url)
        await store.open()
        try:
            deadline = time.monotonic() + 90
            victim = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(2.0)
                if await _succeeded(store) >= total:
                    break
                doomed = workers[victim % 3]
                doomed.kill()
                doomed.wait()
                killed.add(doomed.pid)
                workers[victim % 3] = spawn("worker", shared_url, str(next(slot)), log=log)
                victim += 1
            finished = await _all_done(store, total, deadline)
            counts = await store.counts()
            _await_exit(producers)
        finally:
            _stop(workers + producers)
            await store.close()
        assert all(0 == p.returncode for p in producers), log.read_text()[-3000:]
        assert victim >= 3, f"the run ended after {victim} kills; it should outlast three"
        assert set(range(total)) == read_acked(acked)
        assert finished, f"not all jobs finished: {counts}"
        assert {("default", JobState.SUCCEEDED): total} == counts
        ran = read_runs(runs)
        assert set(range(total)) == set(ran)
        for n, items in ran.items():
            for earlier in items[:-1]:
                assert earlier.pid in killed, f"job {n} ran again without a kill: {items}"


class TestRedisRestart:
    # Above the run's own deadlines (60 s to the crash, 60 s after the restart), so a slow run
    # fails on an assertion that carries the processes' output, not on the suite's limit.
    @pytest.mark.timeout(150)
    async def test_redis_crash_loses_no_acknowledged_job(
        self, own_redis: OwnRedis, tmp_path: Path
    ) -> None:
        """Redis (AOF, appendfsync always) is SIGKILLed mid-run and restarted: producers get
        StoreUnavailable promptly (password masked) and retry, workers reconnect, and every
        acknowledged job succeeds; jobs run twice only if first started before the crash."""
        total, per_producer = 6_000, 3_000
        url = own_redis.url
        log = tmp_path / "stderr.log"
        acked = tmp_path / "acked"
        runs = [tmp_path / f"runs-{i}" for i in range(2)]
        workers = [spawn("worker", url, str(path), log=log) for path in runs]
        producers = [
            spawn("producer", url, str(i * per_producer), str(per_producer), str(acked), log=log)
            for i in range(2)
        ]
        store = open_store(url)
        await store.open()
        try:
            for _ in range(1200):  # crash once a third is acknowledged (within 60 s)
                if len(read_acked(acked)) >= total // 3:
                    break
                await asyncio.sleep(0.05)
            own_redis.crash()
            crashed_at = time.time()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                await store.counts()
            elapsed = time.monotonic() - started
            assert elapsed < 5.0, f"counts took {elapsed:.1f} s to report the crash"
            assert own_redis.password not in str(caught.value)
            assert "127.0.0.1" in str(caught.value)
            await asyncio.sleep(1.0)
            own_redis.start()
            finished = await _all_done(store, total, time.monotonic() + 60)
            counts = await store.counts()
            _await_exit(producers)
        finally:
            _stop(workers + producers)
            await store.close()
        tail = log.read_text()[-3000:]
        assert all(0 == p.returncode for p in producers), tail
        assert set(range(total)) == read_acked(acked), tail
        assert finished, f"not all jobs finished: {counts}\n{tail}"
        assert {("default", JobState.SUCCEEDED): total} == counts, tail
        ran = read_runs(runs)
        assert set(range(total)) == set(ran), tail
        for n, items in ran.items():
            for earlier in items[:-1]:
                assert earlier.at < crashed_at + 0.5, (
                    f"job {n} ran again after recovery (crash at {crashed_at}): {items}"
                )


class TestWorkerStartsFirst:
    async def test_a_worker_started_while_redis_is_down_waits_for_it(
        self, own_redis: OwnRedis, tmp_path: Path
    ) -> None:
        """A worker started while Redis is down retries with backoff instead of exiting (as
        every worker in a deploy that races a Redis restart would), then runs jobs once
        Redis answers, and still drains and exits cleanly on SIGTERM."""
        own_redis.crash()
        log = tmp_path / "stderr.log"
        runs = tmp_path / "runs"
        worker = spawn("worker", own_redis.url, str(runs), log=log)
        try:
            await _logged(log, "store unavailable at start-up; retrying", worker)
            own_redis.start()
            app = make_app(own_redis.url)
            async with app:
                await app.enqueue_many([app.get_task(TASK).prepare(7)])
                for _ in range(300):  # 15 s: the worker's next attempt, then the job
                    if 7 in read_runs([runs]):
                        break
                    await asyncio.sleep(0.05)
            assert [7] == list(read_runs([runs])), _output(log)[-3000:]
            worker.send_signal(signal.SIGTERM)
            assert 0 == worker.wait(15), _output(log)[-3000:]
        finally:
            _stop([worker])

    async def test_a_signal_ends_the_wait_for_redis(
        self, own_redis: OwnRedis, tmp_path: Path
    ) -> None:
        own_redis.crash()
        log = tmp_path / "stderr.log"
        worker = spawn("worker", own_redis.url, str(tmp_path / "runs"), log=log)
        try:
            await _logged(log, "store unavailable at start-up; retrying", worker)
            worker.send_signal(signal.SIGTERM)
            assert 0 == worker.wait(15), _output(log)[-3000:]
        finally:
            _stop([worker])


async def _logged(log: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``proc`` has written ``text`` to ``log``, while it keeps running."""
    for _ in range(300):  # 15 s
        if text in _output(log):
            break
        await asyncio.sleep(0.05)
    output = _output(log)
    assert text in output, output[-3000:]
    assert proc.poll() is None, output[-3000:]


def _output(log: Path) -> str:
    return log.read_text() if log.exists() else "(no output yet)"
