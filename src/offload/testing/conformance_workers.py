"""The conformance suite's tests of the worker registry (``WorkerRegistry``), an optional
capability: a store without it skips them, since offload then never asks it. Every store
offload ships has it. ``StoreConformance`` inherits them; see ``offload.testing.conformance``.

Entries lapse by the store's clock, which for a server store cannot be moved by hand, so the
expiry tests record with a short ttl and sleep past it.
"""

from __future__ import annotations

import asyncio

import pytest

from offload.stores.base import Store, WorkerInfo, WorkerRegistry

# Short enough to keep the suite fast, long enough that a slow round trip never lets an
# entry lapse before the read that expects it.
_SHORT_TTL = 0.3
_LONG_TTL = 30.0


def registry(store: Store) -> WorkerRegistry:
    if not isinstance(store, WorkerRegistry):
        pytest.skip(
            f"{type(store).__name__} has no worker registry (record_worker, forget_worker, "
            "workers): an optional capability, so the dashboard derives workers from running "
            "jobs instead"
        )
    return store


def info(worker_id: str = "w-1-aa", **changes: object) -> WorkerInfo:
    fields: dict[str, object] = {
        "id": worker_id,
        "host": "host-a",
        "pid": 4242,
        "queues": ("mail", "reports"),
        "concurrency": 8,
        "started_at": 1_700_000_000.25,
        "running": 3,
    }
    fields.update(changes)
    return WorkerInfo(**fields)  # type: ignore[arg-type]


@pytest.mark.asyncio
class WorkerRegistryConformance:
    """Workers recorded, read back, renewed, lapsed and forgotten."""

    async def test_a_recorded_worker_reads_back_whole(self, store: Store) -> None:
        """Every field comes back as given, and seen_at is the store's clock at the write."""
        reg = registry(store)
        assert [] == await reg.workers()
        before = await store.now()
        await reg.record_worker(info(seen_at=5.0), _LONG_TTL)
        after = await store.now()
        [got] = await reg.workers()
        assert info(seen_at=got.seen_at) == got
        assert before - 0.001 <= got.seen_at <= after + 0.001

    async def test_every_queue_is_an_empty_tuple(self, store: Store) -> None:
        """A worker on every queue keeps ``()``, not a list or ``None``."""
        reg = registry(store)
        await reg.record_worker(info(queues=()), _LONG_TTL)
        [got] = await reg.workers()
        assert () == got.queues

    async def test_recording_again_updates_the_entry(self, store: Store) -> None:
        """A heartbeat's record replaces the worker's entry: one entry, the new running
        count, a later seen_at."""
        reg = registry(store)
        await reg.record_worker(info(running=0), _LONG_TTL)
        [first] = await reg.workers()
        await asyncio.sleep(0.01)
        await reg.record_worker(info(running=5), _LONG_TTL)
        [second] = await reg.workers()
        assert 5 == second.running
        assert second.seen_at > first.seen_at

    async def test_an_entry_lapses_after_its_ttl(self, store: Store) -> None:
        """A worker that stops recording disappears once its ttl has passed; one that
        records again in time stays."""
        reg = registry(store)
        await reg.record_worker(info("w-gone"), _SHORT_TTL)
        await reg.record_worker(info("w-kept"), _SHORT_TTL)
        assert ["w-gone", "w-kept"] == [w.id for w in await reg.workers()]
        await asyncio.sleep(_SHORT_TTL / 2)
        await reg.record_worker(info("w-kept"), _SHORT_TTL)
        await asyncio.sleep(_SHORT_TTL / 2 + 0.1)
        assert ["w-kept"] == [w.id for w in await reg.workers()]
        await asyncio.sleep(_SHORT_TTL)
        assert [] == await reg.workers()

    async def test_a_lapsed_worker_may_come_back(self, store: Store) -> None:
        """Recording a worker whose entry lapsed lists it again (a long pause, not a
        death)."""
        reg = registry(store)
        await reg.record_worker(info(), _SHORT_TTL)
        await asyncio.sleep(_SHORT_TTL + 0.1)
        assert [] == await reg.workers()
        await reg.record_worker(info(running=1), _LONG_TTL)
        assert [1] == [w.running for w in await reg.workers()]

    async def test_forget_removes_only_that_worker(self, store: Store) -> None:
        """A worker that stopped cleanly is gone at once; forgetting an unknown id is no
        error."""
        reg = registry(store)
        await reg.record_worker(info("w-a"), _LONG_TTL)
        await reg.record_worker(info("w-b"), _LONG_TTL)
        await reg.forget_worker("w-a")
        await reg.forget_worker("w-never")
        assert ["w-b"] == [w.id for w in await reg.workers()]

    async def test_several_workers_are_listed_by_id(self, store: Store) -> None:
        """Each worker is its own entry, with its own fields, in id order."""
        reg = registry(store)
        ids = [f"w-{n}-{n:02x}" for n in (3, 1, 2)]
        for n, worker_id in enumerate(ids):
            await reg.record_worker(
                info(worker_id, host=f"host-{n}", pid=100 + n, running=n), _LONG_TTL
            )
        got = await reg.workers()
        assert sorted(ids) == [w.id for w in got]
        by_id = {w.id: w for w in got}
        for n, worker_id in enumerate(ids):
            assert (f"host-{n}", 100 + n, n) == (
                by_id[worker_id].host,
                by_id[worker_id].pid,
                by_id[worker_id].running,
            )

    async def test_a_ttl_that_is_not_positive_is_refused(self, store: Store) -> None:
        """A ttl of 0 or less would list a worker that is already gone: a clear error."""
        reg = registry(store)
        for bad in (0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="ttl"):
                await reg.record_worker(info(), bad)
        assert [] == await reg.workers()
