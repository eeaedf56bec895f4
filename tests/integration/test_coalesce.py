"""Group commit across callers (``offload.coalesce``): concurrent enqueues share store
calls, each caller gets its own jobs back, and one caller's refusal is not another's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from offload import Offload, QueueFull, StoreUnavailable
from offload.records import JobRecord
from offload.stores.base import JobFilter, NewJob
from offload.stores.sqlite import SQLiteStore
from tests.stores.thirdparty_store import CountingStore


def counted(tmp_path: Path) -> tuple[Offload, CountingStore]:
    store = CountingStore(SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}"))
    return Offload(store=store, embedded_worker=False), store


async def test_concurrent_enqueues_share_store_calls(tmp_path: Path) -> None:
    jobs, store = counted(tmp_path)

    @jobs.task(name="co.one")
    async def one(n: int) -> int:
        return n

    async with jobs:
        handles = await asyncio.gather(*(one.enqueue(n) for n in range(50)))
        # The first goes alone; the 49 that arrived while it was in flight go together.
        assert 2 == store.calls["enqueue"]
        assert len({h.id for h in handles}) == 50
        for n, handle in enumerate(handles):
            record = await jobs.store.get(handle.id)
            assert record is not None
            assert f'{{"n":{n}}}' == record.kwargs.replace(" ", "")
        alone = await one.enqueue(99)  # nothing in flight: at once, in a call of its own
        assert 3 == store.calls["enqueue"]
        assert alone.id != handles[0].id


async def test_a_refused_caller_does_not_refuse_the_others(tmp_path: Path) -> None:
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)

    @jobs.task(name="co.capped", max_queued=1)
    async def capped() -> None:
        return None

    @jobs.task(name="co.free")
    async def free(n: int) -> None:
        return None

    async with jobs:
        await free.enqueue(0)  # in flight first, so that the rest wait and go together
        results = await asyncio.gather(
            free.enqueue(1), capped.enqueue(), capped.enqueue(), free.enqueue(2),
            return_exceptions=True,
        )  # fmt: skip
        refused = [r for r in results if isinstance(r, QueueFull)]
        assert 1 == len(refused)
        assert 3 == sum(1 for r in results if not isinstance(r, BaseException))


class Down(CountingStore):
    """A store whose enqueue fails as a store that is down does, after a moment."""

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        self.calls["enqueue"] += 1
        await asyncio.sleep(0.01)
        raise StoreUnavailable("the job store is down")


async def test_a_store_that_is_down_fails_every_caller_once(tmp_path: Path) -> None:
    store = Down(SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}"))
    jobs = Offload(store=store, embedded_worker=False)

    @jobs.task(name="co.one")
    async def one(n: int) -> int:
        return n

    async with jobs:
        results = await asyncio.gather(*(one.enqueue(n) for n in range(10)), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert 2 == store.calls["enqueue"]  # the first alone, then the nine together


async def test_a_caller_that_gives_up_before_its_turn_stores_nothing(tmp_path: Path) -> None:
    jobs, _ = counted(tmp_path)

    @jobs.task(name="co.one")
    async def one(n: int) -> int:
        return n

    async with jobs:
        first = asyncio.ensure_future(one.enqueue(1))
        await asyncio.sleep(0)  # the first is in flight
        waiting = asyncio.ensure_future(one.enqueue(2))
        await asyncio.sleep(0)
        waiting.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await one.enqueue(3)
        kwargs = sorted(j.kwargs for j in (await jobs.store.list(JobFilter(), 10)).jobs)
        assert ['{"n":1}', '{"n":3}'] == [k.replace(" ", "") for k in kwargs]
