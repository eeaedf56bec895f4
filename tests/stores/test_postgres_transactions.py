"""Transactional enqueue on PostgreSQL: a job written on the application's own connection
commits with the rows beside it (and wakes a waiting worker then), and a rollback leaves no
job; through psycopg directly and through SQLAlchemy's async session and connection."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from offload import ConfigError, Offload, Task
from offload.errors import StoreUnavailable
from offload.stores import ClaimRequest
from offload.stores.postgres import PostgresStore
from tests.stores.conftest import (
    POSTGRES_URL,
    drop_postgres_schema,
    postgres_unreachable,
    postgres_url,
)

SQLALCHEMY_URL = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://")


class Shop:
    def __init__(self, jobs: Offload, confirm: Task[[int], None], schema: str) -> None:
        self.jobs = jobs
        self.confirm = confirm
        self.orders = f'"{schema}".orders'


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    """An app on a schema of its own, beside an orders table of the application's."""
    schema = f"test_{uuid.uuid4().hex}"
    jobs = Offload(postgres_url(schema), embedded_worker=False)

    @jobs.task(name="confirm")
    async def confirm(order_id: int) -> None: ...

    try:
        await jobs.open()
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    shop = Shop(jobs, confirm, schema)
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    async with conn:
        await conn.execute(f"CREATE TABLE {shop.orders} (id integer PRIMARY KEY)")
    try:
        yield shop
    finally:
        await jobs.close()
        await drop_postgres_schema(schema)


async def orders(shop: Shop) -> list[int]:
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
    async with conn:
        cur = await conn.execute(f"SELECT id FROM {shop.orders} ORDER BY id")
        return [row[0] for row in await cur.fetchall()]


class TestPsycopg:
    async def test_commit_stores_the_order_and_its_job_and_wakes_a_worker(self, shop: Shop) -> None:
        store = shop.jobs.store
        stop = asyncio.Event()
        request = ClaimRequest("w", 30.0, 10)
        waiting = asyncio.create_task(store.wait_claim(request, 30.0, stop))
        await asyncio.sleep(0.1)
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
        async with conn:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {shop.orders} VALUES (1)")
                job = await shop.confirm.options(connection=conn).enqueue(1)
                # Not visible to anyone else, not even to a claim, until the commit.
                assert await store.get(job.id) is None
                assert not waiting.done()
            committed = time.monotonic()
        claimed = await asyncio.wait_for(waiting, 5.0)
        woke = time.monotonic() - committed
        assert [job.id] == [j.id for j in claimed]
        assert woke < 2.0, f"the worker woke {woke:.2f} s after the commit"
        assert [1] == await orders(shop)

    async def test_rollback_leaves_neither_the_order_nor_the_job(self, shop: Shop) -> None:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
        async with conn:
            tx = conn.transaction()
            await tx.__aenter__()
            await conn.execute(f"INSERT INTO {shop.orders} VALUES (2)")
            job = await shop.confirm.options(connection=conn).enqueue(2)
            # Leave the transaction by an exception, as a failed endpoint does.
            declined = RuntimeError("payment declined")
            assert not await tx.__aexit__(RuntimeError, declined, None)
        assert await shop.jobs.store.get(job.id) is None
        assert [] == await shop.jobs.store.claim(ClaimRequest("w", 30.0, 10))
        assert [] == await orders(shop)

    async def test_an_idempotency_key_returns_the_committed_job(self, shop: Shop) -> None:
        first = await shop.confirm.options(key="order-3").enqueue(3)
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
        async with conn, conn.transaction():
            again = await shop.confirm.options(key="order-3", connection=conn).enqueue(3)
        assert first.id == again.id

    async def test_enqueue_many_on_the_connection(self, shop: Shop) -> None:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
        async with conn, conn.transaction():
            made = await shop.jobs.enqueue_many(
                [shop.confirm.prepare(n) for n in range(5)], connection=conn
            )
        claimed = await shop.jobs.store.claim(ClaimRequest("w", 30.0, 10))
        assert sorted(j.id for j in made) == sorted(j.id for j in claimed)


class TestSqlAlchemy:
    async def test_session_commit_and_rollback(self, shop: Shop) -> None:
        engine = create_async_engine(SQLALCHEMY_URL)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        try:
            async with sessions() as session, session.begin():
                await session.execute(text(f"INSERT INTO {shop.orders} VALUES (10)"))
                kept = await shop.confirm.options(connection=session).enqueue(10)
            session2: AsyncSession
            async with sessions() as session2:
                await session2.execute(text(f"INSERT INTO {shop.orders} VALUES (11)"))
                lost = await shop.confirm.options(connection=session2).enqueue(11)
                await session2.rollback()
        finally:
            await engine.dispose()
        assert await shop.jobs.store.get(kept.id) is not None
        assert await shop.jobs.store.get(lost.id) is None
        assert [10] == await orders(shop)

    async def test_a_core_connection(self, shop: Shop) -> None:
        engine = create_async_engine(SQLALCHEMY_URL)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"INSERT INTO {shop.orders} VALUES (20)"))
                job = await shop.confirm.options(connection=conn).enqueue(20)
        finally:
            await engine.dispose()
        assert await shop.jobs.store.get(job.id) is not None


class TestRefusals:
    async def test_a_store_that_cannot_join_the_transaction_says_so(self, tmp_path: object) -> None:
        jobs = Offload("memory://", embedded_worker=False)

        @jobs.task(name="confirm")
        async def confirm(order_id: int) -> None: ...

        async with jobs:
            with pytest.raises(ConfigError, match="cannot join; use a postgresql:// store"):
                await confirm.options(connection=object()).enqueue(1)
            assert {} == await jobs.store.counts()

    async def test_something_that_is_not_a_connection_is_named(self, shop: Shop) -> None:
        with pytest.raises(ConfigError, match="not str"):
            await shop.confirm.options(connection="postgresql://db").enqueue(1)

    def test_the_sync_and_prepared_forms_refuse_a_connection(self, shop: Shop) -> None:
        with pytest.raises(TypeError, match="enqueue_sync\\(\\) does not take"):
            shop.confirm.options(connection=object()).enqueue_sync(1)
        with pytest.raises(TypeError, match=r"jobs\.enqueue_many instead"):
            shop.confirm.options(connection=object()).prepare(1)


async def test_nothing_is_prepared_on_the_applications_connection(shop: Shop) -> None:
    """Its own prepare_threshold may be anything; offload's statements are never prepared
    there (a pooler in transaction mode would lose them)."""
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, prepare_threshold=0)
    async with conn:
        for n in range(8):
            async with conn.transaction():
                await shop.confirm.options(connection=conn).enqueue(n)
        cur = await conn.execute("SELECT statement FROM pg_prepared_statements", prepare=False)
        assert [] == [row for row in await cur.fetchall() if "offload_jobs" in str(row[0])]


async def test_with_prepare_off_the_store_prepares_nothing_either() -> None:
    schema = f"test_{uuid.uuid4().hex}"
    jobs = Offload(postgres_url(schema, prepare="false"), embedded_worker=False)

    @jobs.task(name="noop")
    async def noop(n: int) -> None: ...

    try:
        await jobs.open()
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    try:
        for n in range(8):
            await noop.enqueue(n)
        await jobs.store.claim(ClaimRequest("w", 30.0, 10))
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
        async with conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_prepared_statements"  # this session's only
            )
            assert (0,) == await cur.fetchone()
        store = jobs.store
        assert isinstance(store, PostgresStore)
        pool = store._pool
        assert pool is not None
        async with pool.connection() as pooled:
            cur = await pooled.execute("SELECT count(*) FROM pg_prepared_statements")
            assert (0,) == await cur.fetchone()
    finally:
        await jobs.close()
        await drop_postgres_schema(schema)
