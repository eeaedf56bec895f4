"""Redis: backlog limits beyond the conformance suite: where a task's count lives, every
path that puts a capped job back in the line counts it again, a batch across queues, keys
given back by a refused call, and producers in several processes at once."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from offload.errors import QueueFull, StoreUnavailable
from offload.records import JobError, JobLimits, JobState
from offload.stores import ClaimRequest, open_store
from offload.stores.base import NewJob, Outcome, OutcomeKind
from offload.stores.redis import RedisStore
from offload.testing.inputs import TTL, new_job
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable

ROOT = Path(__file__).resolve().parents[2]
TASK = "t.capped"


def capped(most: int = 2, queue: str = "default", **limits: object) -> NewJob:
    job = new_job(TASK, queue=queue, key=limits.pop("key", None))  # type: ignore[arg-type]
    return dataclasses.replace(job, limits=JobLimits(max_queued=most, **limits))  # type: ignore[arg-type]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    await drop_redis_keys(name)


def url_of(prefix: str) -> str:
    return f"{REDIS_URL}?prefix={prefix}&op_timeout=2"


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    opened = open_store(url_of(prefix))
    assert isinstance(opened, RedisStore)
    try:
        await opened.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    try:
        yield opened
    finally:
        await opened.close()


async def depth(store: RedisStore) -> int:
    return (await store.queued_depths([TASK], []))[f"task:{TASK}"]


async def claim_one(store: RedisStore, ttl: float = TTL) -> str:
    [job] = await store.claim(ClaimRequest("w", ttl, 1))
    return job.id


def outcome(job_id: str, kind: OutcomeKind) -> Outcome:
    erred = kind in (OutcomeKind.RETRY, OutcomeKind.FAILED)
    return Outcome(job_id, "w", 1, kind, error=JobError("RuntimeError", "boom") if erred else None)


class TestKeys:
    async def test_a_tasks_backlog_is_a_set_under_the_queue_tag(
        self, store: RedisStore, prefix: str
    ) -> None:
        """The ids of a task's queued capped jobs sit in one set in the queue's slot."""
        jobs = [capped(queue="mail"), capped(queue="mail")]
        await store.enqueue(jobs)
        client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            members = await client.smembers(f"{{{prefix}:q:mail}}:capped:{TASK}")
        finally:
            await client.aclose()
        assert {j.id for j in jobs} == members

    async def test_jobs_without_a_cap_carry_no_limits(self, store: RedisStore, prefix: str) -> None:
        """An uncapped job's hash has no limits field, so its claim takes the plain path."""
        job = new_job()
        await store.enqueue([job])
        client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert not await client.hexists(f"{{{prefix}:q:default}}:job:{job.id}", "limits")
            assert not [k async for k in client.scan_iter(match=f"*{prefix}*capped*")]
        finally:
            await client.aclose()

    async def test_a_tasks_limit_holds_per_queue(self, store: RedisStore) -> None:
        """Like the flow limits, a task's backlog is counted per queue."""
        await store.enqueue([capped(1, queue="a")])
        await store.enqueue([capped(1, queue="b")])
        with pytest.raises(QueueFull):
            await store.enqueue([capped(1, queue="a")])
        assert 2 == await depth(store)


class TestBackInLine:
    @pytest.mark.parametrize("kind", [OutcomeKind.RETRY, OutcomeKind.REQUEUE, OutcomeKind.RELEASE])
    async def test_a_job_queued_again_by_its_worker_counts_again(
        self, store: RedisStore, kind: OutcomeKind
    ) -> None:
        """A retry, a requeue at shutdown and an undone claim each bring it back to the line."""
        await store.enqueue([capped(), capped()])
        job_id = await claim_one(store)
        assert 1 == await depth(store)
        assert [True] == await store.complete([outcome(job_id, kind)])
        assert 2 == await depth(store)
        with pytest.raises(QueueFull):
            await store.enqueue([capped()])

    async def test_a_lapsed_lease_counts_again(self, store: RedisStore) -> None:
        await store.enqueue([capped()])
        await claim_one(store, ttl=0.05)
        assert 0 == await depth(store)
        await asyncio.sleep(0.1)
        assert 1 == await store.requeue_expired()
        assert 1 == await depth(store)

    @pytest.mark.parametrize("end", ["failed", "cancelled"])
    async def test_a_retry_by_hand_counts_again(self, store: RedisStore, end: str) -> None:
        job = capped()
        await store.enqueue([job])
        if end == "failed":
            await claim_one(store)
            await store.complete([outcome(job.id, OutcomeKind.FAILED)])
        else:
            await store.cancel(job.id)
        assert 0 == await depth(store)
        retried = await store.retry(job.id)
        assert retried is not None
        assert JobState.QUEUED == retried.state
        assert 1 == await depth(store)

    async def test_a_job_held_for_a_slot_is_still_queued(self, store: RedisStore) -> None:
        """Held back by its concurrency limit it stays queued, so it keeps its place."""
        await store.enqueue([capped(concurrency_key="c", concurrency=1) for _ in range(2)])
        assert 1 == len(await store.claim(ClaimRequest("w", TTL, 2)))
        assert 1 == await depth(store)
        with pytest.raises(QueueFull):
            await store.enqueue([capped(concurrency_key="c", concurrency=1) for _ in range(2)])


class TestRefusals:
    async def test_with_a_rate_the_wait_is_the_drain_time(self, store: RedisStore) -> None:
        await store.enqueue([capped(4, rate=0.5), capped(4, rate=0.5)])
        with pytest.raises(QueueFull) as refused:
            await store.enqueue([capped(4, rate=0.5) for _ in range(5)])
        # 2 queued + 5 asked - 4 allowed = 3 jobs to drain at half a job a second.
        assert 6.0 == refused.value.retry_after

    async def test_a_batch_across_queues_goes_in_whole_or_not_at_all(
        self, store: RedisStore
    ) -> None:
        await store.enqueue([capped(1, queue="b")])
        batch = [new_job(queue="a"), capped(1, queue="a"), capped(1, queue="b")]
        with pytest.raises(QueueFull) as refused:
            await store.enqueue(batch)
        assert "t.capped" in refused.value.what
        assert all([await store.get(j.id) is None for j in batch])
        assert {"queue:a": 0, "queue:b": 1} == await store.queued_depths([], ["a", "b"])

    async def test_a_refused_call_gives_its_keys_back(self, store: RedisStore) -> None:
        """A key reserved for a job that was refused is free again: the next call that
        brings it creates its own job, not one of the refused id."""
        first = capped(1)
        await store.enqueue([first])
        refused = capped(1, key="k")
        with pytest.raises(QueueFull):
            await store.enqueue([refused])
        await store.cancel(first.id)
        again = capped(1, key="k")
        [record] = await store.enqueue([again])
        assert again.id == record.id

    async def test_a_member_whose_job_is_gone_leaves_at_a_refusal(
        self, store: RedisStore, prefix: str
    ) -> None:
        """A job hash deleted by hand cannot hold a place in the backlog for ever."""
        lost = capped(1)
        await store.enqueue([lost])
        client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            await client.delete(f"{{{prefix}:q:default}}:job:{lost.id}")
        finally:
            await client.aclose()
        await store.enqueue([capped(1)])
        assert 1 == await depth(store)

    async def test_an_uncapped_call_beside_a_refused_one_goes_in(self, store: RedisStore) -> None:
        """Calls with a cap travel alone, so a refusal never reaches another caller."""
        await store.enqueue([capped(1)])
        results = await asyncio.gather(
            store.enqueue([capped(1)]),
            *(store.enqueue([new_job()]) for _ in range(5)),
            return_exceptions=True,
        )
        assert isinstance(results[0], QueueFull)
        assert all(isinstance(r, list) for r in results[1:])


PRODUCER = """
import asyncio, dataclasses, sys
from offload.errors import QueueFull
from offload.records import JobLimits
from offload.stores import open_store
from offload.testing.inputs import new_job

async def main(url: str) -> None:
    store = open_store(url)
    await store.open()
    async def one() -> int:
        job = dataclasses.replace(new_job("t.capped"), limits=JobLimits(max_queued=7))
        try:
            await store.enqueue([job])
        except QueueFull:
            return 0
        return 1
    print(sum(await asyncio.gather(*(one() for _ in range(30)))))
    await store.close()

asyncio.run(main(sys.argv[1]))
"""


async def test_producers_in_several_processes_never_pass_the_limit(
    store: RedisStore, prefix: str
) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", PRODUCER, url_of(prefix), cwd=ROOT, stdout=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [0, 0, 0] == [p.returncode for p in procs]
    assert 7 == sum(int(out) for out, _ in outputs)
    assert 7 == await depth(store)
