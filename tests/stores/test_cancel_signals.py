"""Cancel signals between two stores on the same data, as between a web process and a
worker process: the cancel of one reaches the worker listening on the other through the
server (SQLite's ``data_version``, Redis pub/sub, PostgreSQL ``NOTIFY``, or without
LISTEN its poll), not through the in-process poke the conformance suite's single store
also has."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
import redis.asyncio

from offload.errors import StoreUnavailable
from offload.stores import Store, open_store
from offload.stores.base import CancelSignals, ClaimRequest
from offload.testing.conformance_cancels import HEARD_WITHIN
from offload.testing.conformance_workflows import Graph
from offload.testing.inputs import TTL, new_job
from tests.stores.conftest import (
    REDIS_URL,
    OwnRedis,
    drop_postgres_schema,
    drop_redis_keys,
    postgres_unreachable,
    postgres_url,
    redis_unreachable,
)


@pytest.fixture(params=["sqlite", "redis", "postgres", "postgres-poll"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """The worker's store, then the canceller's, each with connections of its own."""
    kind = request.param
    prefix = f"test_{uuid.uuid4().hex}"
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'store.db'}",
        "redis": f"{REDIS_URL}?prefix={prefix}&op_timeout=2",
        "postgres": postgres_url(prefix),
        "postgres-poll": postgres_url(prefix, listen="false", prepare="false", poll="0.2"),
    }[kind]
    stores = [open_store(url), open_store(url)]
    try:
        for store in stores:
            await store.open()
    except StoreUnavailable as exc:
        if kind == "redis":
            redis_unreachable(exc)
        postgres_unreachable(exc)
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()
        if kind == "redis":
            await drop_redis_keys(prefix)
        if kind.startswith("postgres"):
            await drop_postgres_schema(prefix)


async def _while_listening(worker: CancelSignals, cancel: Awaitable[object]) -> set[str]:
    """What the worker's call hears of ``cancel``, made while the call waits (past the
    read it starts with, so only the store's signal can end it early)."""
    listening = asyncio.create_task(worker.cancel_requests("w-a", HEARD_WITHIN))
    await asyncio.sleep(0.1)
    await cancel
    return await listening


class TestCancelFromAnotherStore:
    async def test_the_worker_hears_a_cancel_made_elsewhere(self, pair: list[Store]) -> None:
        """A job cancelled through the other store is reported to the worker at once."""
        worker, other = pair
        assert isinstance(worker, CancelSignals)
        await worker.cancel_requests("w-a", 0.0)
        (job,) = await worker.enqueue([new_job("t.cancel")])
        await worker.claim(ClaimRequest("w-a", TTL, 1))
        assert {job.id} == await _while_listening(worker, other.cancel(job.id))

    async def test_a_workflow_cancelled_elsewhere_tells_its_running_step(
        self, pair: list[Store]
    ) -> None:
        """A workflow cancelled by its id through the other store: the worker running its
        first step hears of that step."""
        worker, other = pair
        assert isinstance(worker, CancelSignals)
        await worker.cancel_requests("w-a", 0.0)
        graph = Graph()
        first = graph.step("t.first")
        last = graph.step("t.last")
        graph.edge(first, last)
        await worker.enqueue(graph.built(last))
        (claimed,) = await worker.claim(ClaimRequest("w-a", TTL, 1))
        assert first == claimed.id
        assert {first} == await _while_listening(worker, other.cancel(last))


class TestRedisChannels:
    async def test_a_worker_hears_cancels_again_once_redis_is_back(
        self, own_redis: OwnRedis
    ) -> None:
        """The subscription comes back with the connection: after the server restarted, a
        cancel made through another store reaches the worker's calls again (what was sent
        while it was down is the heartbeat's)."""
        from offload.stores.redis import RedisStore
        from offload.stores.redis.cancels import channel_prefix

        worker, other = RedisStore(own_redis.url), RedisStore(own_redis.url)
        await worker.open()
        await other.open()
        try:
            await worker.cancel_requests("w-a", 0.0)
            (job,) = await worker.enqueue([new_job("t.cancel")])
            await worker.claim(ClaimRequest("w-a", TTL, 1))
            own_redis.crash()
            own_redis.start()
            heard: set[str] = set()

            async def listen() -> None:
                # As the worker's loop does: a call that fails is made again.
                while not heard:
                    try:
                        heard.update(await worker.cancel_requests("w-a", HEARD_WITHIN))
                    except Exception:
                        await asyncio.sleep(0.1)

            listening = asyncio.create_task(listen())
            probe = redis.asyncio.Redis.from_url(own_redis.url.split("?")[0])
            channel = channel_prefix("chaos") + "w-a"
            try:
                for _ in range(200):  # until the worker's connection subscribed again
                    counts = await probe.pubsub_numsub(channel)
                    if counts and counts[0][1] == 1:
                        break
                    await asyncio.sleep(0.05)
                assert [(channel.encode(), 1)] == counts
            finally:
                await probe.aclose()
            await other.cancel(job.id)
            await asyncio.wait_for(listening, HEARD_WITHIN)
            assert {job.id} == heard
        finally:
            await worker.close()
            await other.close()

    async def test_a_stopped_worker_leaves_no_subscription(self, own_redis: OwnRedis) -> None:
        """forget_worker, which a stopping worker calls, ends its channel's subscription
        and the connection that held it."""
        from offload.stores.redis import RedisStore
        from offload.stores.redis.cancels import channel_prefix

        store = RedisStore(own_redis.url)
        await store.open()
        probe = redis.asyncio.Redis.from_url(own_redis.url.split("?")[0])
        channel = channel_prefix("chaos") + "w-a"
        try:
            await store.cancel_requests("w-a", 0.0)
            assert [(channel.encode(), 1)] == await probe.pubsub_numsub(channel)
            await store.forget_worker("w-a")
            for _ in range(100):  # the server drops a closed connection's channels soon after
                counts = await probe.pubsub_numsub(channel)
                if counts == [(channel.encode(), 0)]:
                    break
                await asyncio.sleep(0.02)
            assert [(channel.encode(), 0)] == counts
        finally:
            await probe.aclose()
            await store.close()
