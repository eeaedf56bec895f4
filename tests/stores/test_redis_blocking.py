"""Redis: ``enqueue_sync`` sends from the calling thread over blocking connections, with the
loop path's promises: a clear ``StoreUnavailable`` within ``op_timeout`` while Redis is down,
reconnection after a restart, refusals worded with their reason, scripts reloaded when the
server lost them, and a layout of a newer version refused."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI

from offload import JobState, Offload
from offload.errors import ConfigError, StoreUnavailable
from offload.fastapi import Background
from offload.stores.redis import RedisStore
from offload.stores.redis.layout import LAYOUT_VERSION
from tests.stores.conftest import REDIS_URL, OwnRedis, drop_redis_keys, redis_unreachable

BUILT: list[Offload] = []


@pytest.fixture(autouse=True)
def close_built() -> Iterator[None]:
    """Close the connections of the apps a test made (a script's close at exit)."""
    yield
    while BUILT:
        asyncio.run(BUILT.pop().close())


def build(url: str, embedded: bool = False) -> tuple[Offload, Any]:
    jobs = Offload(url, embedded_worker=embedded)
    BUILT.append(jobs)

    @jobs.task(name="tests.add")
    async def add(x: int, y: int) -> int:
        return x + y

    return jobs, add


@pytest.fixture
def admin(own_redis: OwnRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url.split("?")[0])
    try:
        yield client
    finally:
        client.close()


def queued(admin: redis.Redis) -> int:
    return int(admin.hget("{chaos:q:default}:counts", "queued") or 0)


def test_down_is_a_clear_error_within_the_timeout_then_back(
    own_redis: OwnRedis, admin: redis.Redis
) -> None:
    _, add = build(own_redis.url)  # op_timeout=3
    add.enqueue_sync(1, 1)
    own_redis.crash()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"enqueue failed: Redis at .* did not answer") as e:
        add.enqueue_sync(2, 2)
    waited = time.monotonic() - started
    assert waited < 3 + 1.5, waited
    assert own_redis.password not in str(e.value)
    own_redis.start()  # AOF with fsync always: the first job survived
    add.enqueue_sync(3, 3)
    assert 2 == queued(admin)


def test_a_restart_between_calls_is_ridden_out(own_redis: OwnRedis, admin: redis.Redis) -> None:
    """The idle connection died with the server: the next call reconnects and succeeds."""
    _, add = build(own_redis.url)
    add.enqueue_sync(1, 1)
    own_redis.crash()
    own_redis.start()
    add.enqueue_sync(2, 2)
    assert 2 == queued(admin)


def test_a_server_that_comes_back_within_the_timeout(
    own_redis: OwnRedis, admin: redis.Redis
) -> None:
    _, add = build(own_redis.url)
    add.enqueue_sync(1, 1)
    own_redis.crash()
    restarter = threading.Timer(0.5, own_redis.start)
    restarter.start()
    try:
        add.enqueue_sync(2, 2)  # retried with backoff until the server answers
    finally:
        restarter.join()
    assert 2 == queued(admin)


def test_lost_scripts_are_loaded_again(own_redis: OwnRedis, admin: redis.Redis) -> None:
    _, add = build(own_redis.url)
    add.enqueue_sync(1, 1)
    admin.script_flush()
    add.enqueue_sync(2, 2)
    assert 2 == queued(admin)


def test_refusals_name_the_reason(own_redis: OwnRedis, admin: redis.Redis) -> None:
    _, add = build(own_redis.url)
    add.enqueue_sync(1, 1)
    admin.config_set("maxmemory", 1)
    try:
        with pytest.raises(StoreUnavailable, match=r"enqueue refused: .*out of memory"):
            add.enqueue_sync(2, 2)
    finally:
        admin.config_set("maxmemory", 0)
    admin.replicaof("127.0.0.1", 9)
    try:
        with pytest.raises(StoreUnavailable, match="read-only replica"):
            add.enqueue_sync(3, 3)
    finally:
        admin.replicaof("NO", "ONE")
    add.enqueue_sync(4, 4)  # the connection that met READONLY was dropped, a new one works
    assert 2 == queued(admin)


def test_a_newer_layout_is_refused_before_anything_is_written(
    own_redis: OwnRedis, admin: redis.Redis
) -> None:
    admin.set("{chaos}:layout", LAYOUT_VERSION + 1)
    _, add = build(own_redis.url)
    with pytest.raises(ConfigError, match="newer offload"):
        add.enqueue_sync(1, 1)
    assert [b"{chaos}:layout"] == admin.keys("*")


def test_close_closes_the_blocking_connections(own_redis: OwnRedis) -> None:
    jobs, add = build(own_redis.url)
    store = jobs.store
    assert isinstance(store, RedisStore)

    async def opened_on_a_loop() -> None:
        async with jobs:
            await asyncio.to_thread(add.enqueue_sync, 1, 1)
            assert 1 == len(store._conn._blocking_idle)
        assert [] == store._conn._blocking_idle

    asyncio.run(opened_on_a_loop())
    add.enqueue_sync(2, 2)  # a script: never opened
    assert 1 == len(store._conn._blocking_idle)
    asyncio.run(jobs.close())
    assert [] == store._conn._blocking_idle


@pytest.fixture
async def endpoint(own_redis: OwnRedis) -> AsyncIterator[tuple[FastAPI, Offload]]:
    jobs, add = build(own_redis.url, embedded=True)
    app = FastAPI(lifespan=jobs.lifespan)

    @app.post("/add")
    def enqueue_add(x: int, y: int, background: Background) -> dict[str, str]:
        return {"id": background.add_task_sync(add, x, y).id}

    async with jobs.lifespan(app):
        yield app, jobs


async def test_a_def_endpoint_answers_503_while_redis_is_down(
    endpoint: tuple[FastAPI, Offload], own_redis: OwnRedis
) -> None:
    app, jobs = endpoint
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert 200 == (await client.post("/add", params={"x": 1, "y": 2})).status_code
        own_redis.crash()
        try:
            reply = await client.post("/add", params={"x": 3, "y": 4})
            assert 503 == reply.status_code
            assert "Retry-After" in reply.headers
            assert "not accepted" in reply.json()["detail"]
        finally:
            own_redis.start()
        reply = await client.post("/add", params={"x": 5, "y": 6})
        assert 200 == reply.status_code
        job = await jobs.get(reply.json()["id"])
        assert job is not None
        assert 11 == await job.result(timeout=10)


def test_shared_server_records_match_the_loop_path() -> None:
    """The blocking path stores the same record the loop's path would: every field read back
    equals what enqueue_sync returned."""
    prefix = f"test-{uuid.uuid4().hex}"
    url = f"{REDIS_URL}?prefix={prefix}&op_timeout=2"
    jobs, add = build(url)
    try:
        try:
            job = add.options(priority=4, delay=30, key="k").enqueue_sync(1, y=2)
        except StoreUnavailable as exc:
            redis_unreachable(exc)

        async def read() -> None:
            async with jobs:
                stored = await jobs.get(job.id)
                assert stored is not None
                assert job.record == stored.record
                assert JobState.QUEUED == stored.state

        asyncio.run(read())
    finally:
        asyncio.run(drop_redis_keys(prefix))
