"""``task.enqueue_sync``: code that is not async (a ``def`` endpoint, a sync task, a script)
stores jobs with the same guarantees as ``await task.enqueue``, on every store."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from offload import Job, JobContext, JobState, Offload, Worker, correlation
from offload.errors import StoreUnavailable
from offload.fastapi import Background
from offload.stores.base import JobFilter
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable

KINDS = ["memory", "sqlite", "redis"]


def url_for(kind: str, tmp_path: Path, prefix: str) -> str:
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'jobs.db'}",
        "redis": f"{REDIS_URL}?prefix={prefix}&op_timeout=2",
    }[kind]


@pytest.fixture(params=KINDS)
async def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    prefix = f"test-{uuid.uuid4().hex}"
    url = url_for(request.param, tmp_path, prefix)
    if request.param == "redis":
        probe = Offload(url, embedded_worker=False)
        try:
            await probe.open()
        except StoreUnavailable as exc:
            redis_unreachable(exc)
        await probe.close()
    yield url
    if request.param == "redis":
        await drop_redis_keys(prefix)


def build(url: str, embedded: bool = False) -> tuple[Offload, Any, Any]:
    jobs = Offload(url, embedded_worker=embedded)

    @jobs.task(name="tests.add")
    async def add(x: int, y: int) -> int:
        return x + y

    @jobs.task(name="tests.fan_out")
    def fan_out(ctx: JobContext, n: int) -> list[str]:
        """A sync task (run in the worker's thread pool) that enqueues follow-ups."""
        return [add.enqueue_sync(i, i).id for i in range(n)]

    return jobs, add, fan_out


async def test_from_a_thread_while_the_app_is_open(app_url: str) -> None:
    jobs, add, _ = build(app_url)
    async with jobs:

        def in_thread() -> Job[int]:
            with correlation.bound({correlation.REQUEST_ID: "req-7"}):
                return add.options(priority=3, queue="sync").enqueue_sync(2, y=3)  # type: ignore[no-any-return]

        job = await asyncio.to_thread(in_thread)
        stored = await jobs.get(job.id)
        assert stored is not None
        assert (JobState.QUEUED, "sync", 3) == (stored.state, stored.queue, stored.record.priority)
        assert "req-7" == stored.meta[correlation.REQUEST_ID]
        assert ("[]", '{"x":2,"y":3}') == (stored.record.args, stored.record.kwargs)
        # A worker runs it, and the handle the thread got reads the result.
        worker = Worker(jobs, concurrency=4, queues=["sync"], install_signals=False)
        await worker.run_until_idle()
        assert 5 == await job.result(timeout=5)


async def test_a_key_names_one_job_whichever_way_it_was_enqueued(app_url: str) -> None:
    jobs, add, _ = build(app_url)
    async with jobs:
        first = await asyncio.to_thread(add.options(key="order-1").enqueue_sync, 1, 1)
        again = await asyncio.to_thread(add.options(key="order-1").enqueue_sync, 9, 9)
        awaited = await add.options(key="order-1").enqueue(8, 8)
        assert first.id == again.id == awaited.id
        page = await jobs.store.list(JobFilter(), 10)
        assert [first.id] == [r.id for r in page.jobs]


async def test_refused_on_the_loops_thread_with_the_fix(app_url: str) -> None:
    jobs, add, _ = build(app_url)
    async with jobs:
        with pytest.raises(RuntimeError, match=r"await task\.enqueue"):
            add.enqueue_sync(1, 2)
        assert [] == (await jobs.store.list(JobFilter(), 10)).jobs


async def test_bad_arguments_raise_before_anything_is_stored(app_url: str) -> None:
    jobs, add, _ = build(app_url)
    async with jobs:
        with pytest.raises(TypeError):
            await asyncio.to_thread(add.enqueue_sync, 1)  # y missing
        assert [] == (await jobs.store.list(JobFilter(), 10)).jobs


async def test_a_sync_task_enqueues_follow_ups(app_url: str) -> None:
    jobs, _, fan_out = build(app_url)
    async with jobs:
        parent = await fan_out.enqueue(3)
        worker = Worker(jobs, concurrency=4, install_signals=False)
        await worker.run_until_idle()
        children = await parent.result(timeout=5)
        assert 3 == len(children)
        for i, child_id in enumerate(children):
            child = await jobs.get(child_id)
            assert child is not None
            assert parent.id == child.meta[correlation.PARENT_JOB_ID]
            assert 2 * i == await child.result(timeout=5)


async def test_an_embedded_worker_is_woken_by_a_sync_enqueue(app_url: str) -> None:
    jobs, add, _ = build(app_url)
    worker = Worker(jobs, concurrency=4, install_signals=False)
    async with jobs:
        runner = asyncio.create_task(worker.run())
        try:
            await worker.started.wait()
            job = await asyncio.to_thread(add.enqueue_sync, 20, 22)
            # Well under the idle wait's timeout: the wake-up, not a poll, ran it.
            assert 42 == await job.result(timeout=3)
        finally:
            worker.stop()
            await runner


def test_a_script_with_no_event_loop(app_url: str, tmp_path: Path) -> None:
    """A plain program: the app was never opened and no loop runs anywhere."""
    jobs, add, _ = build(app_url)
    job = add.enqueue_sync(4, 5)
    assert JobState.QUEUED == job.state

    async def check() -> None:
        async with jobs:
            stored = await jobs.get(job.id)
            assert stored is not None
            assert JobState.QUEUED == stored.state

    asyncio.run(check())
    if app_url.startswith("sqlite"):  # durable in the file, not just in this process
        with sqlite3.connect(tmp_path / "jobs.db") as conn:
            assert [(job.id,)] == conn.execute("SELECT id FROM offload_jobs").fetchall()


def test_threads_at_once_in_a_script(app_url: str) -> None:
    jobs, add, _ = build(app_url)
    ids: list[str] = []
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            for i in range(25):
                ids.append(add.enqueue_sync(i, i).id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [] == errors
    assert 100 == len(set(ids))

    async def count() -> int:
        async with jobs:
            return sum((await jobs.store.counts()).values())

    if not app_url.startswith("memory"):
        assert 100 == asyncio.run(count())
    asyncio.run(jobs.close())


def _loop_threads(before: set[threading.Thread]) -> list[str]:
    """The app's own loop threads started since ``before``."""
    return [
        t.name
        for t in threading.enumerate()
        if t.name == "offload-enqueue-sync" and t not in before
    ]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_scripts_calls_share_one_opening(kind: str, tmp_path: Path) -> None:
    """Stores without a blocking path open once, on a loop thread of the app's own, not once
    per call; ``close`` stops that thread, and a later call opens again."""
    jobs, add, _ = build(url_for(kind, tmp_path, ""))
    before = set(threading.enumerate())
    assert [] == _loop_threads(before)
    first = [add.enqueue_sync(i, i).id for i in range(3)]
    assert ["offload-enqueue-sync"] == _loop_threads(before)
    asyncio.run(jobs.close())
    assert [] == _loop_threads(before)
    later = add.enqueue_sync(9, 9)

    async def stored() -> list[str]:
        async with jobs:  # another loop: the app's own is handed back first
            assert [] == _loop_threads(before)
            page = await jobs.store.list(JobFilter(), limit=10)
            return sorted(r.id for r in page.jobs)

    if kind == "sqlite":
        assert sorted([*first, later.id]) == asyncio.run(stored())
    asyncio.run(jobs.close())
    assert [] == _loop_threads(before)


def test_a_script_that_never_closes_exits_with_its_jobs_stored(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    script = f"""
from offload import Offload
jobs = Offload("sqlite:///{db}")

@jobs.task(name="tests.add")
async def add(x: int, y: int) -> int:
    return x + y

print(",".join(add.enqueue_sync(i, i).id for i in range(3)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert 0 == done.returncode, done.stderr
    ids = done.stdout.strip().split(",")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, state FROM offload_jobs").fetchall()
    assert sorted((i, "queued") for i in ids) == sorted(rows)


@pytest.fixture
def sync_endpoint_app(app_url: str) -> tuple[FastAPI, Offload]:
    jobs, add, _ = build(app_url, embedded=True)
    app = FastAPI(lifespan=jobs.lifespan)

    @app.post("/add")
    def enqueue_add(x: int, y: int, background: Background) -> dict[str, str]:
        job = background.add_task_sync(add, x, y)
        return {"id": job.id}

    return app, jobs


async def test_a_def_endpoint_stores_before_answering(
    sync_endpoint_app: tuple[FastAPI, Offload],
) -> None:
    app, jobs = sync_endpoint_app
    async with jobs.lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            reply = await client.post("/add", params={"x": 1, "y": 2})
            assert 200 == reply.status_code
            job = await jobs.get(reply.json()["id"])
            assert job is not None
            assert 3 == await job.result(timeout=5)
