"""Redis: queues created by another process are found as soon as a waiting worker wakes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from offload.errors import StoreUnavailable
from offload.jobs import JobState
from offload.stores import ClaimRequest, open_store
from offload.stores.redis import RedisStore
from offload.testing.conformance import TTL, new_job
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two handles on one key prefix: a worker's and a producer's, as in two processes."""
    prefix = f"test-{uuid.uuid4().hex}"
    url = f"{REDIS_URL}?prefix={prefix}&op_timeout=2"
    worker, producer = open_store(url), open_store(url)
    assert isinstance(worker, RedisStore)
    assert isinstance(producer, RedisStore)
    try:
        await worker.open()
        await producer.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    try:
        yield worker, producer
    finally:
        await worker.close()
        await producer.close()
        await drop_redis_keys(prefix)


async def test_worker_claims_from_a_queue_born_while_it_waited(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """The first job of a brand-new queue wakes a worker serving all queues, and that
    worker's next claim takes it, although its cached list of queues is still fresh."""
    worker, producer = pair
    assert [] == await worker.claim(ClaimRequest("w", TTL, limit=10))
    waiter = asyncio.create_task(worker.wait(None, 5.0))
    await asyncio.sleep(0.05)
    [job] = await producer.enqueue([new_job(queue=f"q-{uuid.uuid4().hex[:6]}")])
    await asyncio.wait_for(waiter, 3.0)
    claimed = await worker.claim(ClaimRequest("w", TTL, limit=10))
    assert [job.id] == [r.id for r in claimed]


async def test_concurrent_enqueues_share_round_trips_and_keep_their_own_jobs(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """Callers that enqueue at once are sent together, yet each gets back exactly its own
    jobs in order, and callers sharing an idempotency key all get the one job."""
    _, producer = pair
    batches = [[new_job(args=f"[{i}, {k}]") for k in range(i % 3 + 1)] for i in range(200)]
    keyed = [[new_job(key="same")] for _ in range(20)]
    results = await asyncio.gather(*(producer.enqueue(b) for b in batches + keyed))
    for batch, got in zip(batches, results[:200], strict=True):
        assert [j.id for j in batch] == [r.id for r in got]
        assert [j.args for j in batch] == [r.args for r in got]
    assert 1 == len({got[0].id for got in results[200:]})
    total = sum(len(b) for b in batches) + 1
    assert {("default", JobState.QUEUED): total} == await producer.counts()


async def test_a_failed_shared_round_trip_reaches_every_caller(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """When the server refuses a coalesced call, every caller in it gets the error and the
    store keeps working for the next callers."""
    _, producer = pair
    big = "x" * 64
    bad = new_job()
    bad.priority = big  # type: ignore[assignment]  # not a number: the script fails
    first = asyncio.ensure_future(producer.enqueue([new_job()]))
    await asyncio.sleep(0)
    joined = [asyncio.ensure_future(producer.enqueue([new_job()])) for _ in range(5)]
    joined.append(asyncio.ensure_future(producer.enqueue([bad])))
    await first
    outcomes = await asyncio.gather(*joined, return_exceptions=True)
    assert all(isinstance(o, Exception) for o in outcomes)
    [after] = await producer.enqueue([new_job()])
    assert JobState.QUEUED == after.state


async def test_a_lost_queue_registry_is_rebuilt_by_the_next_enqueue(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """After the registry of queues is lost (FLUSHDB, a restart without persistence), a
    producer that keeps running registers its queue again, so workers serving all queues
    still find its jobs."""
    worker, producer = pair
    queue = f"q-{uuid.uuid4().hex[:6]}"
    await producer.enqueue([new_job(queue=queue)])
    await drop_redis_keys(producer._conn.opts.prefix)
    [job] = await producer.enqueue([new_job(queue=queue)])
    await worker.wait(None, 0.05)  # the wake-up from the re-registered queue, if any
    await worker._conn.refresh_known(0.0)
    assert [job.id] == [r.id for r in await worker.claim(ClaimRequest("w", TTL, limit=10))]
