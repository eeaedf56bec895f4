"""Redis: data of layout 1 (finished jobs in each queue's done set alone) is brought up to
layout 2 when a process opens it, so that activity tells its finished jobs' states apart
and a key of any task is found without a scan."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from offload.errors import StoreUnavailable
from offload.records import JobError
from offload.stores import ClaimRequest, JobFilter, Outcome, OutcomeKind, Store, open_store
from offload.stores.redis.layout import LAYOUT_VERSION
from offload.testing.inputs import TTL, done, new_job
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        await drop_redis_keys(name)


async def _opened(prefix: str) -> Store:
    store = open_store(f"{REDIS_URL}?prefix={prefix}")
    try:
        await store.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    return store


async def test_layout_1_data_is_filed_by_state_on_open(prefix: str) -> None:
    store = await _opened(prefix)
    try:
        for queue in ("a", "b"):
            made = await store.enqueue([new_job(queue=queue) for _ in range(5)])
            await store.enqueue([new_job(f"task-{queue}", queue=queue, key="k")])
            await store.cancel(made[-1].id)
            claimed = await store.claim(ClaimRequest("w", TTL, 4, [queue]))
            err = JobError("RuntimeError", "boom")
            await store.complete(
                [
                    done(claimed[0].id, "w"),
                    done(claimed[1].id, "w"),
                    Outcome(claimed[2].id, "w", 1, OutcomeKind.FAILED, error=err),
                    Outcome(claimed[3].id, "w", 1, OutcomeKind.CANCELLED, error=err),
                ]
            )
        want = await store.activity(time.time() - 3600, 3600)
    finally:
        await store.close()
    assert (4, 2, 4) == (
        sum(a.succeeded for a in want),
        sum(a.failed for a in want),
        sum(a.cancelled for a in want),
    )
    # The data as layout 1 kept it: no per-state sets, version 1.
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        for queue in ("a", "b"):
            await client.delete(
                f"{{{prefix}:q:{queue}}}:failed", f"{{{prefix}:q:{queue}}}:cancelled"
            )
        await client.delete(f"{{{prefix}}}:keyed_tasks")
        await client.set(f"{{{prefix}}}:layout", 1)
        store = await _opened(prefix)
        try:
            assert want == await store.activity(time.time() - 3600, 3600)
            keyed = (await store.list(JobFilter(key="k"), 10)).jobs
            assert ["task-a", "task-b"] == sorted(j.task for j in keyed)
        finally:
            await store.close()
        assert str(LAYOUT_VERSION) == await client.get(f"{{{prefix}}}:layout")
    finally:
        await client.aclose()
