"""Redis: a reachable server that refuses writes (out of memory, turned replica) gives a clear
``StoreUnavailable`` naming the reason, never a raw redis-py error; the store recovers once
the server accepts writes again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI

from offload import Offload
from offload.errors import StoreUnavailable
from offload.fastapi import Background
from offload.jobs import JobState
from offload.stores import ClaimRequest, open_store
from offload.stores.redis import RedisStore
from offload.testing.inputs import new_job
from tests.stores.conftest import OwnRedis


@pytest.fixture
async def admin(own_redis: OwnRedis) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the test's own server, to change its settings under the store."""
    client = redis.asyncio.Redis.from_url(own_redis.url.split("?")[0])
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(own_redis: OwnRedis) -> AsyncIterator[RedisStore]:
    opened = open_store(own_redis.url)
    assert isinstance(opened, RedisStore)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_full_server_refuses_with_the_reason_and_the_fix(
    store: RedisStore, admin: redis.asyncio.Redis
) -> None:
    [first] = await store.enqueue([new_job()])
    await admin.config_set("maxmemory", 1)  # far below what it holds: every write refused
    try:
        with pytest.raises(StoreUnavailable, match=r"out of memory.*maxmemory.*purge"):
            await store.enqueue([new_job(), new_job(queue="other")])
    finally:
        await admin.config_set("maxmemory", 0)
    # Nothing of the refused calls was applied, and the same store goes on.
    assert {("default", JobState.QUEUED): 1} == await store.counts()
    assert [] == await store.claim(ClaimRequest("w", 30, 10, ["other"]))
    await store.enqueue([new_job()])
    claimed = await store.claim(ClaimRequest("w", 30, limit=10))
    assert first.id == claimed[0].id
    assert 2 == len(claimed)


async def test_a_primary_turned_replica_is_reported_then_left(
    store: RedisStore, admin: redis.asyncio.Redis, own_redis: OwnRedis
) -> None:
    """After a failover the old primary answers every write with READONLY: the caller hears
    why, the store drops its connections to it, and the next call connects afresh."""
    await store.enqueue([new_job()])
    # A primary that cannot be reached: the server stays a read-only replica meanwhile.
    await admin.replicaof("127.0.0.1", 9)
    try:
        with pytest.raises(StoreUnavailable, match="read-only replica") as caught:
            await store.enqueue([new_job()])
        assert own_redis.password not in str(caught.value)
    finally:
        await admin.replicaof("NO", "ONE")
    await store.enqueue([new_job()])
    assert {("default", JobState.QUEUED): 2} == await store.counts()


async def test_a_worker_waiting_for_work_hears_the_refusal_in_words(
    store: RedisStore, admin: redis.asyncio.Redis
) -> None:
    """The claim that rides behind a worker's blocking wait is refused like any call."""
    await store.enqueue([new_job()])
    await admin.replicaof("127.0.0.1", 9)
    try:
        with pytest.raises(StoreUnavailable, match=r"waiting for work refused.*read-only"):
            await store.wait_claim(ClaimRequest("w", 30, 10, ["default"]), 1.0, asyncio.Event())
    finally:
        await admin.replicaof("NO", "ONE")
    assert 1 == len(
        await store.wait_claim(ClaimRequest("w", 30, 10, ["default"]), 1.0, asyncio.Event())
    )


async def test_an_endpoint_answers_503_when_redis_refuses(
    own_redis: OwnRedis, admin: redis.asyncio.Redis
) -> None:
    """What a full server means to an endpoint's client: 503 and Retry-After, not a 500."""
    jobs = Offload(own_redis.url, embedded_worker=False)

    @jobs.task(name="tests.noop")
    async def noop() -> None:
        pass

    api = FastAPI()

    @api.post("/go")
    async def go(background: Background) -> dict[str, str]:
        job = await background.add_task(noop)
        return {"id": job.id}

    transport = httpx.ASGITransport(app=api)
    async with jobs, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await admin.config_set("maxmemory", 1)
        try:
            refused = await client.post("/go")
        finally:
            await admin.config_set("maxmemory", 0)
        accepted = await client.post("/go")
    assert (503, 200) == (refused.status_code, accepted.status_code)
    assert "retry-after" in refused.headers
