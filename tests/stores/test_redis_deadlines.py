"""The Redis store's per-operation deadline (``RedisConnection.guard``), without a server:
the guard needs only the URL's ``op_timeout``, so these run whether Redis is up or not."""

from __future__ import annotations

import asyncio
import time

import pytest

from offload.errors import StoreUnavailable
from offload.stores.redis.connection import RedisConnection

# Nothing listens there; the guard never connects.
URL = "redis://127.0.0.1:1/0?op_timeout=0.2"


async def test_an_operation_past_its_deadline_raises_store_unavailable() -> None:
    conn = RedisConnection(URL)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"enqueue failed: Redis at .* within 0\.2 s"):
        async with conn.guard("enqueue"):
            await asyncio.sleep(30)
    assert 0.15 < time.monotonic() - started < 2
    assert not conn.deadlines.due
    assert not conn.deadlines.expired


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    conn = RedisConnection(URL)

    async def op() -> None:
        async with conn.guard("enqueue"):
            await asyncio.sleep(30)

    task = asyncio.create_task(op())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not conn.deadlines.due


async def test_quick_operations_leave_nothing_behind_and_are_never_cancelled_later() -> None:
    conn = RedisConnection(URL)
    for _ in range(1000):
        async with conn.guard("enqueue"):
            await asyncio.sleep(0)
    assert not conn.deadlines.due
    # Well past every deadline those operations had: the task is not cancelled after the fact.
    await asyncio.sleep(0.5)
    assert not conn.deadlines.expired


async def test_nested_guards_keep_the_outer_deadline() -> None:
    conn = RedisConnection(URL)
    started = time.monotonic()

    async def purge() -> None:
        async with conn.guard("purge"):
            await asyncio.sleep(0.15)
            async with conn.guard("purge step"):
                await asyncio.sleep(30)

    with pytest.raises(StoreUnavailable, match="purge failed"):
        await purge()
    # The outer deadline (0.2 s from the start) ends it, not the inner one (0.35 s).
    assert time.monotonic() - started < 0.3
    assert not conn.deadlines.due


async def test_concurrent_operations_each_get_their_own_deadline() -> None:
    conn = RedisConnection(URL)

    async def op(hang: bool) -> str:
        async with conn.guard("claim"):
            await asyncio.sleep(30 if hang else 0.01)
        return "done"

    results = await asyncio.gather(op(True), op(False), op(True), return_exceptions=True)
    assert isinstance(results[0], StoreUnavailable)
    assert results[1] == "done"
    assert isinstance(results[2], StoreUnavailable)
    assert not conn.deadlines.due


def test_the_deadline_holds_on_a_second_event_loop() -> None:
    """A store used from one loop and then another (two ``asyncio.run`` calls) still times out."""
    conn = RedisConnection(URL)

    async def quick() -> None:
        async with conn.guard("enqueue"):
            await asyncio.sleep(0)

    async def hang() -> None:
        async with conn.guard("enqueue"):
            await asyncio.sleep(30)

    asyncio.run(quick())
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        asyncio.run(hang())
    assert time.monotonic() - started < 2
