"""Redis: the key layout's version, recorded with the data and checked by every process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from offload.errors import ConfigError, StoreUnavailable
from offload.stores import open_store
from offload.stores.redis_layout import LAYOUT_VERSION
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable


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
