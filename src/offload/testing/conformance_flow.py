"""The conformance suite's tests of flow control (``FlowControl``): rate and concurrency
limits that the store enforces in ``claim`` for every worker. An optional capability: a
store without it skips them, and offload refuses limited tasks on it.
``StoreConformance`` inherits them; see ``offload.testing.conformance``.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from offload.records import JobLimits, JobState, WaitingReason
from offload.stores.base import ClaimRequest, FlowControl, NewJob, Store
from offload.testing.inputs import TTL, done, new_job


def flow(store: Store) -> FlowControl:
    if not isinstance(store, FlowControl):
        pytest.skip(
            f"{type(store).__name__} has no flow control (limit_usage and limits in claim): "
            "an optional capability, so offload refuses limited tasks on it"
        )
    return store


def limited(limits: JobLimits, **fields: object) -> NewJob:
    return dataclasses.replace(new_job(**fields), limits=limits)  # type: ignore[arg-type]


GROUP = JobLimits(concurrency_key="t:user-1", concurrency=2)
BUCKET = JobLimits(rate_key="t:smtp", rate=5.0, burst=1)


async def claim(store: Store, n: int = 10, ttl: float = TTL) -> list[str]:
    return [j.id for j in await store.claim(ClaimRequest("w", ttl, n))]


@pytest.mark.asyncio
class FlowControlConformance:
    """Limits hold in claim, held jobs wait without using attempts, and slots come back."""

    async def test_a_group_runs_at_most_its_limit(self, store: Store) -> None:
        flow(store)
        jobs = [limited(GROUP) for _ in range(5)]
        await store.enqueue(jobs)
        first = await claim(store)
        assert [jobs[0].id, jobs[1].id] == first
        assert [] == await claim(store)  # a second worker finds nothing more of the group
        third = await store.get(jobs[2].id)
        assert third is not None
        assert (JobState.QUEUED, 0) == (third.state, third.attempt)
        assert WaitingReason.CONCURRENCY is third.waiting_reason
        assert third.run_at <= await store.now()  # its due time, as enqueued
        await store.complete([done(first[0], "w")])
        assert [jobs[2].id] == await claim(store)
        started = await store.get(jobs[2].id)
        assert started is not None
        assert (1, None) == (started.attempt, started.waiting_reason)

    async def test_other_jobs_are_not_held_behind_a_full_group(self, store: Store) -> None:
        flow(store)
        group = [limited(JobLimits(concurrency_key="t:g", concurrency=1), priority=5)
                 for _ in range(3)]  # fmt: skip
        free = [new_job() for _ in range(3)]
        await store.enqueue(group + free)
        assert {group[0].id, *(j.id for j in free)} == set(await claim(store, 4))

    async def test_a_lapsed_lease_gives_its_slot_back(self, store: Store) -> None:
        flow(store)
        jobs = [limited(JobLimits(concurrency_key="t:g", concurrency=1)) for _ in range(2)]
        await store.enqueue(jobs)
        assert [jobs[0].id] == await claim(store, ttl=0.2)
        assert [] == await claim(store)
        await asyncio.sleep(0.35)
        await store.requeue_expired()
        assert len(await claim(store)) == 1

    async def test_a_bucket_spaces_its_jobs(self, store: Store) -> None:
        flow(store)
        jobs = [limited(BUCKET) for _ in range(3)]
        await store.enqueue(jobs)
        assert [jobs[0].id] == await claim(store)
        now = await store.now()
        second = await store.get(jobs[1].id)
        third = await store.get(jobs[2].id)
        assert second is not None
        assert third is not None
        assert WaitingReason.RATE_LIMIT is second.waiting_reason
        assert (0, JobState.QUEUED) == (second.attempt, second.state)
        # 5 a second: the next token in 0.2 s, the one after in 0.4 s.
        assert now + 0.1 < second.run_at <= now + 0.25
        assert second.run_at + 0.1 < third.run_at <= now + 0.45
        assert [] == await claim(store)
        await asyncio.sleep(max(0.0, second.run_at - await store.now()) + 0.02)
        assert [jobs[1].id] == await claim(store)

    async def test_a_job_held_for_a_token_keeps_it(self, store: Store) -> None:
        """Each job held for a token takes one as it is held, so a job that comes after
        them waits behind all of them (not for the next token, which is theirs), and each
        is held once rather than weighed again at every claim."""
        flow(store)
        bucket = JobLimits(rate_key="t:kept", rate=10.0, burst=1)
        jobs = [limited(bucket) for _ in range(5)]
        await store.enqueue(jobs)
        began = await store.now()
        assert [jobs[0].id] == await claim(store)
        last = await store.get(jobs[4].id)
        assert last is not None
        assert began + 0.35 < last.run_at <= began + 0.5
        after = limited(bucket)
        await store.enqueue([after])
        assert [] == await claim(store)
        behind = await store.get(after.id)
        assert behind is not None
        assert WaitingReason.RATE_LIMIT is behind.waiting_reason
        assert behind.run_at >= last.run_at + 0.09

    async def test_jobs_whose_time_passed_long_ago_are_weighed_again(self, store: Store) -> None:
        """Workers that were away do not start every job whose token came meanwhile at
        once: a claim late by more than a token's time weighs them again."""
        flow(store)
        bucket = JobLimits(rate_key="t:away", rate=10.0, burst=1)
        jobs = [limited(bucket) for _ in range(5)]
        await store.enqueue(jobs)
        assert [jobs[0].id] == await claim(store)
        await asyncio.sleep(0.8)  # every held job's time is 0.3 s or more ago
        assert 1 == len(await claim(store))

    async def test_a_burst_starts_at_once_after_a_quiet_spell(self, store: Store) -> None:
        flow(store)
        burst = JobLimits(rate_key="t:burst", rate=1.0, burst=3)
        jobs = [limited(burst) for _ in range(4)]
        await store.enqueue(jobs)
        assert [j.id for j in jobs[:3]] == await claim(store)
        assert [] == await claim(store)

    async def test_usage_counts_running_and_waiting(self, store: Store) -> None:
        control = flow(store)
        group = JobLimits(concurrency_key="t:usage", concurrency=1)
        await store.enqueue([limited(group) for _ in range(3)])
        await claim(store)
        [used] = await control.limit_usage(["t:usage"])
        assert ("t:usage", 1, 2) == (used.key, used.running, used.waiting)
