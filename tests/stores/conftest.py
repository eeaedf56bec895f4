"""One ``store`` fixture, parametrised over every store, against real servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offload.errors import StoreUnavailable
from offload.stores import Store, open_store

STORES = ["memory", "sqlite", "redis"]
REDIS_URL = "redis://127.0.0.1:6379/0"


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
        reason = f"Redis not reachable at 127.0.0.1:6379: {exc}"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield s
    finally:
        await s.close()
        if kind == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(REDIS_URL)
            async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
                await client.delete(key)
            await client.aclose()
