"""Backlog limits on PostgreSQL where the conformance suite cannot reach: producers on
stores of their own (each a pool, as in separate processes) never pass a task's limit, and
a capped enqueue in the application's transaction is a savepoint of it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import cast

import psycopg
import pytest

from offload.errors import QueueFull
from offload.records import JobLimits
from offload.stores.base import NewJob
from offload.stores.postgres import PostgresStore
from offload.testing.inputs import new_job
from tests.stores.conftest import (
    POSTGRES_URL,
    postgres_stores,
)

pytestmark = pytest.mark.asyncio

PRODUCERS = 4


@pytest.fixture
async def stores() -> AsyncIterator[list[PostgresStore]]:
    async with postgres_stores(PRODUCERS) as opened:
        yield cast(list[PostgresStore], opened)


def capped(most: int, rate: float | None = None) -> NewJob:
    limits = JobLimits(max_queued=most, rate_key=None if rate is None else "t", rate=rate)
    return dataclasses.replace(new_job("t.capped"), limits=limits)


class TestProducersAtOnce:
    async def test_stores_at_once_fill_the_backlog_exactly(
        self, stores: list[PostgresStore]
    ) -> None:
        """Forty enqueues from four pools at once, limit 7: seven are stored, no more."""

        async def one(store: PostgresStore) -> bool:
            try:
                await store.enqueue([capped(7)])
            except QueueFull:
                return False
            return True

        accepted = await asyncio.gather(*(one(s) for _ in range(10) for s in stores))
        assert 7 == sum(accepted)
        assert {"task:t.capped": 7} == await stores[0].queued_depths(["t.capped"], [])

    async def test_a_rate_says_when_the_backlog_drains(self, stores: list[PostgresStore]) -> None:
        """With 2 jobs a second, a call 4 jobs past the limit is told to come in 2 s."""
        await stores[0].enqueue([capped(2, rate=2.0) for _ in range(2)])
        with pytest.raises(QueueFull) as refused:
            await stores[1].enqueue([capped(2, rate=2.0) for _ in range(4)])
        assert 2.0 == pytest.approx(refused.value.retry_after)


class TestInTransaction:
    async def test_a_refusal_leaves_the_applications_transaction_usable(
        self, stores: list[PostgresStore]
    ) -> None:
        """A refused capped enqueue rolls back only its own savepoint: the application's
        transaction goes on and commits its jobs."""
        store = stores[0]
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
        async with conn:
            [kept] = await store.enqueue_in(conn, [capped(1)])
            with pytest.raises(QueueFull):
                await store.enqueue_in(conn, [capped(1)])
            await conn.execute("SELECT 1")
            assert await stores[1].get(kept.id) is None  # not committed yet
        assert await stores[1].get(kept.id) is not None
        assert {"task:t.capped": 1} == await store.queued_depths(["t.capped"], [])
