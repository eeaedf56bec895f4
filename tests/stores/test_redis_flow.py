"""Redis: flow control's own keys and paths beyond the conformance suite: where the keys
live, what a job without limits leaves behind, cancelling a waiting job, listing held jobs,
and a retry giving its slot back."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from offload.errors import StoreUnavailable
from offload.records import JobLimits, JobState, WaitingReason
from offload.stores import ClaimRequest, open_store
from offload.stores.base import JobFilter, NewJob, Outcome, OutcomeKind
from offload.stores.redis import RedisStore
from offload.testing.inputs import TTL, done, new_job
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable

ONE = JobLimits(concurrency_key="k", concurrency=1)


def limited(limits: JobLimits, **fields: object) -> NewJob:
    return dataclasses.replace(new_job(**fields), limits=limits)  # type: ignore[arg-type]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    await drop_redis_keys(name)


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    opened = open_store(f"{REDIS_URL}?prefix={prefix}&op_timeout=2")
    assert isinstance(opened, RedisStore)
    try:
        await opened.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    try:
        yield opened
    finally:
        await opened.close()


async def keys_of(prefix: str) -> list[str]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return sorted([k async for k in client.scan_iter(match=f"*{prefix}*", count=1000)])
    finally:
        await client.aclose()


async def claim(store: RedisStore, n: int = 10) -> list[str]:
    return [j.id for j in await store.claim(ClaimRequest("w", TTL, n))]


async def test_limit_keys_share_the_queue_slot(store: RedisStore, prefix: str) -> None:
    both = JobLimits(concurrency_key="user:1", concurrency=1, rate_key="smtp", rate=1.0)
    await store.enqueue([limited(both, queue="mail") for _ in range(3)])
    await claim(store)
    tag = f"{{{prefix}:q:mail}}"
    flow = [k for k in await keys_of(prefix) if k.startswith(tag) and ":job:" not in k]
    assert {f"{tag}:conc_running:user:1", f"{tag}:conc_held:user:1", f"{tag}:held",
            f"{tag}:bucket:smtp"} <= set(flow)  # fmt: skip


async def test_unlimited_jobs_leave_no_flow_state(store: RedisStore, prefix: str) -> None:
    jobs = [new_job() for _ in range(3)]
    await store.enqueue(jobs)
    assert 3 == len(await claim(store))
    await store.complete([done(j.id, "w") for j in jobs])
    names = await keys_of(prefix)
    assert not [k for k in names if any(w in k for w in ("conc_", "bucket", "rate_", "held"))]
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert not await client.hexists(f"{{{prefix}:q:default}}:job:{jobs[0].id}", "limits")
    finally:
        await client.aclose()


async def test_a_cancelled_held_job_leaves_its_line(store: RedisStore) -> None:
    jobs = [limited(ONE) for _ in range(3)]
    await store.enqueue(jobs)
    assert [jobs[0].id] == await claim(store)
    assert [] == await claim(store)
    cancelled = await store.cancel(jobs[1].id)
    assert cancelled is not None
    assert (JobState.CANCELLED, None) == (cancelled.state, cancelled.waiting_reason)
    [used] = await store.limit_usage(["k"])
    assert (1, 1) == (used.running, used.waiting)
    await store.complete([done(jobs[0].id, "w")])
    assert [jobs[2].id] == await claim(store)


async def test_a_cancelled_job_let_out_for_a_slot_passes_it_on(store: RedisStore) -> None:
    """A held job let back into ready and cancelled there hands the slot to the next one,
    or that one would wait with nothing of its key running to let it out."""
    jobs = [limited(ONE) for _ in range(3)]
    await store.enqueue(jobs)
    assert [jobs[0].id] == await claim(store)
    assert [] == await claim(store)
    await store.complete([done(jobs[0].id, "w")])  # jobs[1] goes back to ready
    await store.cancel(jobs[1].id)
    assert [jobs[2].id] == await claim(store)


async def test_listing_shows_held_jobs_and_why(store: RedisStore) -> None:
    jobs = [limited(ONE) for _ in range(3)]
    await store.enqueue(jobs)
    await claim(store)
    # From the state indexes, and by walking the ids.
    for states in ((JobState.QUEUED,), ()):
        page = await store.list(JobFilter(states=states), 10)
        reasons = {j.id: j.waiting_reason for j in page.jobs}
        assert WaitingReason.CONCURRENCY is reasons[jobs[1].id]
        assert WaitingReason.CONCURRENCY is reasons[jobs[2].id]


async def test_a_retry_gives_its_slot_back(store: RedisStore) -> None:
    jobs = [limited(ONE) for _ in range(2)]
    await store.enqueue(jobs)
    assert [jobs[0].id] == await claim(store)
    retry = Outcome(jobs[0].id, "w", 1, OutcomeKind.RETRY, delay=60.0)
    assert [True] == await store.complete([retry])
    assert [jobs[1].id] == await claim(store)
    used, other = await store.limit_usage(["k", "nothing"])
    assert (1, 0) == (used.running, used.waiting)
    assert ("nothing", 0, None, 0) == (other.key, other.running, other.tokens, other.waiting)


async def test_a_long_line_of_held_jobs_is_put_back_in_steps(store: RedisStore) -> None:
    """One claim call puts back at most about 1,000 held jobs, so it never blocks the
    server for long; the next claim goes on from there."""
    line = [limited(ONE) for _ in range(1500)]
    free = new_job()
    await store.enqueue([*line, free])
    assert [line[0].id] == await claim(store)
    assert [free.id] == await claim(store)
    [used] = await store.limit_usage(["k"])
    assert (1, 1499) == (used.running, used.waiting)


async def test_a_slot_kept_by_a_job_not_running_comes_back(store: RedisStore, prefix: str) -> None:
    """A full key's running set is checked against the jobs, so a member no script removed
    (a process of an older offload requeued the job) does not hold its slot for ever."""
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.sadd(f"{{{prefix}:q:default}}:conc_running:k", "gone")
    finally:
        await client.aclose()
    job = limited(ONE)
    await store.enqueue([job])
    assert [job.id] == await claim(store)
    [used] = await store.limit_usage(["k"])
    assert 1 == used.running
