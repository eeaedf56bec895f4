"""Job arguments over the payload limit are refused at enqueue, on every store, with nothing
stored: not the job, not a key, not a row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio

from offload import Offload, PayloadTooLarge
from offload.app import DEFAULT_MAX_PAYLOAD
from offload.stores import Store
from offload.stores.base import JobFilter
from offload.stores.redis import RedisStore
from tests.stores.conftest import REDIS_URL

MIB = 1 << 20
TEN_MB = "x" * 10_000_000


@pytest.fixture
async def app(store: Store) -> AsyncIterator[Offload]:
    jobs = Offload(store=store, embedded_worker=False)
    async with jobs:
        yield jobs


async def stored(store: Store) -> tuple[int, dict[Any, int], set[bytes]]:
    """Jobs listed, counts by task and state, and (on Redis) every key under the prefix."""
    page = await store.list(JobFilter(), 100)
    keys: set[bytes] = set()
    if isinstance(store, RedisStore):
        [prefix] = parse_qs(urlsplit(store.url).query)["prefix"]
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            keys = {key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)}
        finally:
            await client.aclose()
    return len(page.jobs), await store.counts(), keys


async def test_a_10_mb_argument_is_refused_with_its_size_and_the_limit(
    app: Offload, store: Store
) -> None:
    @app.task(name="tests.upload")
    async def upload(data: str) -> None:
        pass

    before = await stored(store)
    with pytest.raises(PayloadTooLarge) as caught:
        await upload.enqueue(TEN_MB)
    message = str(caught.value)
    assert "task 'tests.upload'" in message
    assert "9.5 MiB (10,000,013 bytes) as JSON" in message
    assert "over the limit of 1.0 MiB (1,048,576 bytes)" in message
    assert "Offload(max_payload=...) or @jobs.task(max_payload=...)" in message
    assert (10_000_013, DEFAULT_MAX_PAYLOAD, "tests.upload") == (
        caught.value.size,
        caught.value.limit,
        caught.value.task,
    )
    assert before == await stored(store)
    # The store is fine: a call within the limit goes in.
    await upload.enqueue("small")
    assert 1 == (await stored(store))[0]


async def test_a_batch_with_one_call_over_the_limit_stores_none_of_it(
    app: Offload, store: Store
) -> None:
    @app.task(name="tests.echo")
    async def echo(text: str) -> None:
        pass

    before = await stored(store)
    with pytest.raises(PayloadTooLarge):
        await app.enqueue_many([echo.prepare("a"), echo.prepare(TEN_MB), echo.prepare("b")])
    assert before == await stored(store)


async def test_enqueue_sync_and_options_are_refused_alike(app: Offload, store: Store) -> None:
    @app.task(name="tests.echo")
    async def echo(text: str) -> None:
        pass

    before = await stored(store)
    with pytest.raises(PayloadTooLarge):
        await asyncio.to_thread(echo.enqueue_sync, TEN_MB)
    with pytest.raises(PayloadTooLarge):
        await echo.options(key="k", queue="big").enqueue(text=TEN_MB)
    assert before == await stored(store)


async def test_a_tasks_own_limit_overrides_the_apps(app: Offload, store: Store) -> None:
    @app.task(name="tests.bulk", max_payload=20 * MIB)
    async def bulk(data: str) -> None:
        pass

    @app.task(name="tests.tiny", max_payload=100)
    async def tiny(data: str) -> None:
        pass

    await bulk.enqueue(TEN_MB)
    with pytest.raises(PayloadTooLarge, match="over the limit of 100 bytes"):
        await tiny.enqueue("x" * 100)
    assert 1 == (await stored(store))[0]


class TestLimit:
    """What counts against the limit, and how it is set (no store needed)."""

    def test_the_limit_counts_encoded_bytes_exactly(self) -> None:
        jobs = Offload("memory://", embedded_worker=False, max_payload=100)

        @jobs.task
        async def note(text: str) -> None:
            pass

        empty = sum(map(len, note.codec.encode_args(("",), {})))
        note.prepare("x" * (100 - empty))
        with pytest.raises(PayloadTooLarge, match="101 bytes as JSON"):
            note.prepare("x" * (101 - empty))
        # UTF-8 bytes, not characters: "é" takes two.
        note.prepare("é" * ((100 - empty) // 2))
        with pytest.raises(PayloadTooLarge, match="over the limit of 100 bytes"):
            note.prepare("é" * ((100 - empty) // 2 + 1))

    def test_no_limit_with_max_payload_none(self) -> None:
        jobs = Offload("memory://", embedded_worker=False, max_payload=None)

        @jobs.task
        async def upload(data: str) -> None:
            pass

        assert upload.max_payload is None
        upload.prepare(TEN_MB)

    def test_the_default_is_one_mebibyte(self) -> None:
        jobs = Offload("memory://", embedded_worker=False)

        @jobs.task
        async def upload(data: str) -> None:
            pass

        assert MIB == DEFAULT_MAX_PAYLOAD == jobs.max_payload == upload.max_payload

    @pytest.mark.parametrize("value", [0, -1, 1.5, "1MB", True])
    def test_a_bad_limit_is_refused(self, value: Any) -> None:
        with pytest.raises(ValueError, match="max_payload is a number of bytes above 0"):
            Offload("memory://", max_payload=value)
        jobs = Offload("memory://")
        with pytest.raises(ValueError, match="max_payload is a number of bytes above 0"):

            @jobs.task(max_payload=value)
            async def task() -> None:
                pass
