"""One ``store`` fixture, parametrised over every store, against real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis.asyncio

from offload.errors import StoreUnavailable
from offload.stores import Store, open_store
from tests.conftest import IN_CI

STORES = ["memory", "sqlite", "redis"]
REDIS_URL = "redis://127.0.0.1:6379/0"


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server is missing, or fail it under CI, where it must be there."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def redis_unreachable(exc: BaseException) -> NoReturn:
    unavailable(f"Redis not reachable at 127.0.0.1:6379: {exc}")


async def drop_redis_keys(prefix: str) -> None:
    """Remove every key a test made under its own prefix on the shared server."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    kind = request.param
    prefix = f"test-{uuid.uuid4().hex}"
    url = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'store.db'}",
        "redis": f"{REDIS_URL}?prefix={prefix}&op_timeout=2",
    }[kind]
    s = open_store(url)
    try:
        await s.open()
    except StoreUnavailable as exc:
        if kind != "redis":
            raise
        redis_unreachable(exc)
    try:
        yield s
    finally:
        await s.close()
        if kind == "redis":
            await drop_redis_keys(prefix)
