"""Redis: what the store checks when it opens: the key layout's version, recorded with the
data and checked by every process, and a server setting that would lose jobs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from offload.errors import ConfigError, StoreUnavailable
from offload.stores import open_store
from offload.stores.redis.layout import LAYOUT_VERSION
from tests.stores.conftest import REDIS_URL, OwnRedis, drop_redis_keys, redis_unreachable


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        await drop_redis_keys(name)


async def _keys(prefix: str) -> dict[str, object]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        names = [k async for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
        return {str(k): await client.get(k) for k in names}
    finally:
        await client.aclose()


async def _put(key: str, value: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.set(key, value)
    except (OSError, RedisConnectionError) as exc:
        redis_unreachable(exc)
    finally:
        await client.aclose()


async def test_new_data_records_the_layout_version(prefix: str) -> None:
    store = open_store(f"{REDIS_URL}?prefix={prefix}")
    try:
        await store.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    await store.close()
    assert {f"{{{prefix}}}:layout": str(LAYOUT_VERSION)} == await _keys(prefix)


async def test_data_of_a_newer_layout_is_refused_and_left_alone(prefix: str) -> None:
    """An older process must not write beside a newer one: it would skip what the newer
    layout keeps, and neither would notice."""
    key = f"{{{prefix}}}:layout"
    newer = LAYOUT_VERSION + 1
    await _put(key, str(newer))
    store = open_store(f"{REDIS_URL}?prefix={prefix}")
    with pytest.raises(ConfigError, match=rf"layout version {newer}.*upgrade offload"):
        await store.open()
    assert {key: str(newer)} == await _keys(prefix)


async def test_a_prefix_taken_by_another_program_is_refused(prefix: str) -> None:
    key = f"{{{prefix}}}:layout"
    await _put(key, "banana")
    store = open_store(f"{REDIS_URL}?prefix={prefix}")
    with pytest.raises(ConfigError, match="another program uses this prefix"):
        await store.open()


@pytest.mark.parametrize(
    ("policy", "warned"),
    [
        ("allkeys-lru", True),
        ("allkeys-random", True),
        ("volatile-lru", False),
        ("noeviction", False),
    ],
)
async def test_a_server_that_may_evict_jobs_is_reported(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture, policy: str, warned: bool
) -> None:
    """Only ``allkeys-*`` policies may pick a job: offload's keys never expire, so the
    ``volatile-*`` ones leave them alone."""
    client = redis.asyncio.Redis.from_url(own_redis.url.split("?")[0])
    try:
        await client.config_set("maxmemory-policy", policy)
    finally:
        await client.aclose()
    store = open_store(own_redis.url)
    with caplog.at_level(logging.WARNING, logger="offload.store.redis"):
        await store.open()
    await store.close()
    reports = [r for r in caplog.records if getattr(r, "action", None) == "store.redis_eviction"]
    assert warned == bool(reports)
    if warned:
        assert "noeviction" in reports[0].getMessage()
        assert policy == getattr(reports[0], "policy", None)
