"""A store from outside offload passes the public conformance suite and runs an app's jobs.

``thirdparty_store.CountingStore`` is the example of docs/testing.md: this file is what that
page tells a store's author to write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offload import Offload, Worker
from offload.stores import Store, open_store
from offload.testing import StoreConformance
from tests.stores.thirdparty_store import CountingStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """The suite's one fixture: a fresh, opened store per test, closed afterwards."""
    s = CountingStore(open_store(f"sqlite:///{tmp_path / 'jobs.db'}"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class TestCountingStore(StoreConformance):
    """Every conformance test, run against the wrapped store."""


async def test_an_app_runs_its_jobs_through_the_store(tmp_path: Path) -> None:
    counting = CountingStore(open_store(f"sqlite:///{tmp_path / 'jobs.db'}"))
    jobs = Offload(store=counting, embedded_worker=False)

    @jobs.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with jobs:
        job = await add.enqueue(2, 3)
        assert 1 == await Worker(jobs, install_signals=False).run_until_idle()
        assert 5 == await job.result(timeout=5)
    assert counting.calls["enqueue"] == 1
    assert counting.calls["claim"] >= 1
    assert counting.calls["complete"] == 1
    assert isinstance(counting, Store)
