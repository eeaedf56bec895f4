"""Redis: queues created by another process are found as soon as a waiting worker wakes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from offload.errors import StoreUnavailable
from offload.stores import open_store
from offload.stores.redis import RedisStore
from offload.testing.conformance import TTL, new_job
from tests.stores.conftest import REDIS_URL


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
        reason = f"Redis not reachable at 127.0.0.1:6379: {exc}"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield worker, producer
    finally:
        await worker.close()
        await producer.close()
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS_URL)
        async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            await client.delete(key)
        await client.aclose()


async def test_worker_claims_from_a_queue_born_while_it_waited(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """The first job of a brand-new queue wakes a worker serving all queues, and that
    worker's next claim takes it, although its cached list of queues is still fresh."""
    worker, producer = pair
    assert [] == await worker.claim(None, 10, "w", TTL)
    waiter = asyncio.create_task(worker.wait(None, 5.0))
    await asyncio.sleep(0.05)
    [job] = await producer.enqueue([new_job(queue=f"q-{uuid.uuid4().hex[:6]}")])
    await asyncio.wait_for(waiter, 3.0)
    claimed = await worker.claim(None, 10, "w", TTL)
    assert [job.id] == [r.id for r in claimed]
