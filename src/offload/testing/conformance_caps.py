"""The conformance suite's tests of backlog limits (``QueueCaps``): ``enqueue`` refuses a
call that would take a task or a queue past its ``max_queued``, atomically with the write,
so every producer of every process sees one count. An optional capability: a store without
it skips them, and offload refuses such limits on it.
``StoreConformance`` inherits them; see ``offload.testing.conformance``.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from offload.errors import QueueFull
from offload.records import JobLimits, JobState
from offload.stores.base import ClaimRequest, NewJob, QueueCaps, Store
from offload.testing.inputs import TTL, done, new_job


def caps(store: Store) -> QueueCaps:
    if not isinstance(store, QueueCaps):
        pytest.skip(
            f"{type(store).__name__} has no backlog limits (queued_depths and QueueFull in "
            "enqueue): an optional capability, so offload refuses max_queued on it"
        )
    return store


def capped(task: str = "t.capped", most: int = 2, **fields: object) -> NewJob:
    return dataclasses.replace(
        new_job(task, **fields),  # type: ignore[arg-type]
        limits=JobLimits(max_queued=most),
    )


def in_queue(queue: str, most: int, task: str = "t.any", **fields: object) -> NewJob:
    return dataclasses.replace(
        new_job(task, queue=queue, **fields),  # type: ignore[arg-type]
        limits=JobLimits(queue_max=most),
    )


async def active(store: Store) -> int:
    counts = await store.counts()
    return sum(
        n for (_, state), n in counts.items() if state in (JobState.QUEUED, JobState.RUNNING)
    )


@pytest.mark.asyncio
class QueueCapsConformance:
    """Backlogs are counted in the store, refusals store nothing, and room comes back."""

    async def test_a_task_past_its_backlog_is_refused(self, store: Store) -> None:
        caps(store)
        await store.enqueue([capped(), capped()])
        with pytest.raises(QueueFull) as refused:
            await store.enqueue([capped()])
        assert (2, 2) == (refused.value.limit, refused.value.queued)
        assert "t.capped" in refused.value.what
        assert refused.value.retry_after > 0
        assert 2 == await active(store)

    async def test_a_refused_batch_stores_nothing(self, store: Store) -> None:
        caps(store)
        await store.enqueue([capped()])
        batch = [new_job("t.free"), capped(), capped()]
        with pytest.raises(QueueFull):
            await store.enqueue(batch)
        assert all([await store.get(j.id) is None for j in batch])
        assert 1 == await active(store)

    async def test_a_job_whose_key_is_on_record_is_not_counted(self, store: Store) -> None:
        caps(store)
        first = capped(key="k1")
        await store.enqueue([first, capped()])
        [record] = await store.enqueue([capped(key="k1")])
        assert first.id == record.id

    async def test_started_and_cancelled_jobs_make_room(self, store: Store) -> None:
        control = caps(store)
        jobs = [capped(), capped()]
        await store.enqueue(jobs)
        [claimed] = await store.claim(ClaimRequest("w", TTL, 1))
        await store.cancel(jobs[1].id)
        await store.enqueue([capped(), capped()])
        depths = await control.queued_depths(["t.capped"], [])
        assert {"task:t.capped": 2} == depths
        await store.complete([done(claimed.id, "w")])
        with pytest.raises(QueueFull):
            await store.enqueue([capped()])

    async def test_a_queue_limit_counts_every_task_of_the_queue(self, store: Store) -> None:
        control = caps(store)
        await store.enqueue([in_queue("mail", 3, "t.a"), in_queue("mail", 3, "t.b")])
        await store.enqueue([new_job("t.c", queue="other")])
        with pytest.raises(QueueFull) as refused:
            await store.enqueue([in_queue("mail", 3, "t.c"), in_queue("mail", 3, "t.d")])
        assert "mail" in refused.value.what
        assert {"queue:mail": 2, "queue:other": 1} == await control.queued_depths(
            [], ["mail", "other"]
        )

    async def test_producers_at_once_never_pass_the_limit(self, store: Store) -> None:
        caps(store)

        async def one() -> bool:
            try:
                await store.enqueue([capped(most=5)])
            except QueueFull:
                return False
            return True

        accepted = await asyncio.gather(*(one() for _ in range(20)))
        assert 5 == sum(accepted)
        assert 5 == await active(store)
