"""A running worker lists itself in the store's worker registry, idle or busy, with the jobs
it runs counted at each heartbeat, and removes itself when it stops; the dashboard's
overview shows it; on real stores."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from offload import JobState, Offload, Worker
from offload.dashboard import basic_auth
from offload.errors import StoreUnavailable
from offload.stores import WorkerInfo, WorkerRegistry
from offload.stores.memory import MemoryStore

# A short lease: the heartbeat, which records the worker, comes every 0.2 s.
LEASE = 0.6


async def _listed(jobs: Offload) -> list[WorkerInfo]:
    store = jobs.store
    assert isinstance(store, WorkerRegistry)
    return await store.workers()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds: the store's state has no event to wait on here."""
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.02)


async def test_a_worker_is_listed_idle_then_busy_and_gone_after_stop(store_url: str) -> None:
    jobs = Offload(store_url, embedded_worker=False)
    release = asyncio.Event()

    @jobs.task(name="tests.hold")
    async def hold() -> None:
        await release.wait()

    async with jobs:
        worker = Worker(jobs, concurrency=4, queues=["default"], install_signals=False, lease=LEASE)
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.started.wait(), 5)
            # Recorded at start, before it ran anything.
            [idle] = await _listed(jobs)
            assert (worker.id, socket.gethostname(), os.getpid()) == (idle.id, idle.host, idle.pid)
            assert (("default",), 4, 0) == (idle.queues, idle.concurrency, idle.running)
            assert idle.seen_at <= await jobs.store.now() + 0.001
            assert idle.started_at <= idle.seen_at

            job = await hold.enqueue()

            async def busy() -> bool:
                found = await _listed(jobs)
                return bool(found) and found[0].running == 1

            await _until(busy)
            [listed] = await _listed(jobs)
            assert listed.seen_at > idle.seen_at
            assert JobState.RUNNING == (await job.refresh()).state

            # Still there while idle again: the heartbeat records it with no job to renew.
            release.set()
            await job.result(timeout=5)

            async def idle_again() -> bool:
                found = await _listed(jobs)
                return bool(found) and found[0].running == 0

            await _until(idle_again)
            await asyncio.sleep(LEASE * 1.5)
            assert [worker.id] == [w.id for w in await _listed(jobs)]
        finally:
            worker.stop()
            await asyncio.wait_for(running, 10)
        assert [] == await _listed(jobs)


async def test_the_overview_shows_a_running_worker_with_host_and_heartbeat(
    store_url: str,
) -> None:
    jobs = Offload(store_url, embedded_worker=False)
    release = asyncio.Event()

    @jobs.task(name="tests.hold")
    async def hold() -> None:
        await release.wait()

    app = FastAPI()
    app.include_router(jobs.dashboard(auth=basic_auth("admin", "correct-horse")), prefix="/d")
    transport = httpx.ASGITransport(app)
    async with jobs, httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def overview() -> str:
            response = await client.get("/d/live/overview", auth=("admin", "correct-horse"))
            assert 200 == response.status_code, response.text
            return response.text

        worker = Worker(jobs, concurrency=3, install_signals=False, lease=LEASE)
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.started.wait(), 5)
            idle = await overview()
            assert f'data-worker="{worker.id}"' in idle
            assert f"<td>{socket.gethostname()}</td>" in idle
            assert f"<td>{os.getpid()}</td>" in idle
            assert "<td>all</td>" in idle
            assert re.search(r"<td data-heartbeat>\d+ s ago</td>", idle)
            assert "idle" in idle
            job = await hold.enqueue()

            async def shown_running() -> bool:
                return 'data-running="1">1/3<' in await overview()

            await _until(shown_running)
            assert f"/d/jobs/{job.id}" in await overview()
        finally:
            release.set()
            worker.stop()
            await asyncio.wait_for(running, 10)
        gone = await overview()
        assert worker.id not in gone
        assert "No worker is running." in gone


async def test_a_registry_that_fails_is_logged_once_and_never_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every record fails; the worker still runs its job, warns once, and stops cleanly."""
    store = MemoryStore()
    calls = 0

    async def broken(info: WorkerInfo, ttl: float) -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("the registry is down")

    store.record_worker = broken  # type: ignore[method-assign]
    jobs = Offload(store=store, embedded_worker=False)

    @jobs.task(name="tests.add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with jobs:
        worker = Worker(jobs, install_signals=False, lease=LEASE)
        with caplog.at_level(logging.WARNING, logger="offload.worker"):
            running = asyncio.create_task(worker.run())
            await asyncio.wait_for(worker.started.wait(), 5)
            job = await add.enqueue(2, 3)
            assert 5 == await job.result(timeout=5)
            await asyncio.sleep(LEASE)
            worker.stop()
            await asyncio.wait_for(running, 10)
    assert calls >= 3
    warned = [r for r in caplog.records if getattr(r, "action", None) == "worker.record_error"]
    assert 1 == len(warned)
    assert logging.WARNING == warned[0].levelno
