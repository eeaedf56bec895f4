"""docs/postgresql.md: its SQL runs on a real store with jobs in it, and its table of columns
is the table's."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from offload.errors import StoreUnavailable
from offload.records import JobError
from offload.stores.base import ClaimRequest, Outcome, OutcomeKind
from offload.stores.postgres import PostgresStore
from offload.testing.inputs import new_job
from tests.stores.conftest import (
    POSTGRES_URL,
    drop_postgres_schema,
    postgres_unreachable,
    postgres_url,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "postgresql.md"
TEXT = DOC.read_text(encoding="utf-8")
SQL = re.findall(r"```sql\n(.*?)```", TEXT, re.DOTALL)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A store with two failures of ``mail`` and a queued job, as workers leave them."""
    name = f"test_{uuid.uuid4().hex}"
    store = PostgresStore(postgres_url(name))
    try:
        await store.open()
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    try:
        jobs = [new_job("mail", meta={"request_id": "req-1"}) for _ in range(2)]
        await store.enqueue(jobs)
        claimed = await store.claim(ClaimRequest("w", 30, 10))
        error = JobError("ValueError", "bad address", None)
        await store.complete(
            [Outcome(j.id, "w", j.attempt, OutcomeKind.FAILED, error=error) for j in claimed]
        )
        await store.enqueue([new_job("report")])
        yield name
    finally:
        await store.close()
        await drop_postgres_schema(name)


async def run(schema: str, query: str) -> list[tuple[object, ...]]:
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
    async with conn:
        cur = await conn.execute(query.replace("public.", f'"{schema}".'))
        return await cur.fetchall()


async def test_the_examples_run_and_find_what_they_say(schema: str) -> None:
    assert 3 == len(SQL)
    failed, waiting, by_request = [await run(schema, q) for q in SQL]
    assert [("mail", 2)] == [row[:2] for row in failed]
    assert [("default", 1)] == [row[:2] for row in waiting]
    assert [("mail", "failed", "bad address")] * 2 == [row[1:] for row in by_request]


async def test_the_column_table_is_the_table(schema: str) -> None:
    documented = re.findall(r"^\| `(\w+)` \| ([a-z ]+) \|", TEXT, re.MULTILINE)
    rows = await run(
        schema,
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = '{schema}' AND table_name = 'offload_jobs' "
        "ORDER BY ordinal_position",
    )
    aliases = {"timestamp with time zone": "timestamptz"}
    actual = [(str(name), aliases.get(str(kind), str(kind))) for name, kind in rows]
    assert actual == [(name, kind.strip()) for name, kind in documented if name in dict(actual)]
    assert len(actual) == len([d for d in documented if d[0] in dict(actual)])
