"""docs/postgresql.md: its SQL runs on a real store with jobs in it, its Python samples run
against the real server, and its tables of columns, indexes and options are the code's.

The example queries name ``offload_jobs`` without a schema, as they read on the default
``public``; each test's store lives in a schema of its own, so the queries run with
``search_path`` set to it (the page tells users the same for ``?schema=``)."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest

from offload.errors import StoreUnavailable
from offload.records import JobError
from offload.stores.base import ClaimRequest, Outcome, OutcomeKind
from offload.stores.postgres import PostgresStore, options, schema
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
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)
REQUEST_ID = "req-4f1c9a"
SAMPLE_ID = "0193b5a2-7c41-7e6a-9d4f-2b8c1e0f3a57"
SAMPLE_DATABASE = "postgresql://shop:secret@db.internal:5432/shop"


def table_after(heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after ``heading``, each a list of its cells."""
    rest = TEXT.split(heading, 1)[1]
    lines = rest[rest.index("\n|") + 1 :].split("\n\n", 1)[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


@dataclass
class Filled:
    """A store's schema holding jobs as workers leave them."""

    schema: str
    store: PostgresStore
    failed_mail: str


@pytest.fixture
async def fresh() -> AsyncIterator[tuple[str, PostgresStore]]:
    """An open store on a schema nobody has used; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    store = PostgresStore(postgres_url(name))
    try:
        await store.open()
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    try:
        yield name, store
    finally:
        await store.close()
        await drop_postgres_schema(name)


@pytest.fixture
async def filled(fresh: tuple[str, PostgresStore]) -> Filled:
    """Two failures of ``mail`` and one success of ``ok`` from one request, a failure of
    ``report``; then one due job and one delayed job on queue ``bulk``."""
    name, store = fresh
    by_request = {"request_id": REQUEST_ID}
    await store.enqueue(
        [
            new_job("mail", meta=by_request),
            new_job("mail", meta=by_request),
            new_job("report"),
            new_job("ok", meta=by_request),
        ]
    )
    claimed = await store.claim(ClaimRequest("w", 30, 10))
    error = JobError("ValueError", "bad address", "Traceback ...")
    await store.complete(
        [
            Outcome(j.id, "w", j.attempt, OutcomeKind.SUCCEEDED, result='{"sent": true}')
            if j.task == "ok"
            else Outcome(j.id, "w", j.attempt, OutcomeKind.FAILED, error=error)
            for j in claimed
        ]
    )
    await store.enqueue(
        [new_job("export", queue="bulk"), new_job("later", queue="bulk", delay=3600.0)]
    )
    failed_mail = next(j.id for j in claimed if j.task == "mail")
    return Filled(name, store, failed_mail)


async def run(name: str, query: str, setting: str = "") -> list[tuple[Any, ...]]:
    """``query`` with the search path on the test's schema (and ``setting`` run first)."""
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    async with conn:
        path = psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(name))
        await conn.execute(path)
        if setting:
            await conn.execute(setting.encode())
        cur = await conn.execute(query.encode())
        return await cur.fetchall() if cur.description is not None else []


class TestExampleQueries:
    def test_there_are_samples(self) -> None:
        """The page has the samples these tests run."""
        assert 6 == len(SQL)
        assert 2 == len(PYTHON)

    async def test_failed_in_the_last_hour_by_task(self, filled: Filled) -> None:
        """Counts the failures just recorded, the most failed task first."""
        rows = await run(filled.schema, SQL[0])
        assert [("mail", 2), ("report", 1)] == [row[:2] for row in rows]
        assert all(isinstance(row[2], datetime.datetime) for row in rows)

    async def test_oldest_due_job_per_queue(self, filled: Filled) -> None:
        """Counts the due job of ``bulk`` and leaves the delayed one out."""
        [(queue, due, oldest, waited)] = await run(filled.schema, SQL[1])
        assert ("bulk", 1) == (queue, due)
        assert isinstance(oldest, datetime.datetime)
        assert datetime.timedelta(0) <= waited < datetime.timedelta(minutes=1)

    async def test_a_job_by_id_with_its_error(self, filled: Filled) -> None:
        """Finds the job and spells out its error."""
        assert 1 == SQL[2].count(SAMPLE_ID)
        [row] = await run(filled.schema, SQL[2].replace(SAMPLE_ID, filled.failed_mail))
        assert (
            filled.failed_mail,
            "mail",
            "failed",
            1,
            3,
        ) == (str(row[0]), *row[1:5])
        assert ("ValueError", "bad address", "Traceback ...") == row[6:]

    async def test_throughput_per_minute(self, filled: Filled) -> None:
        """Counts every outcome of the last hour (summed: the run may straddle a minute)."""
        rows = await run(filled.schema, SQL[3])
        assert (1, 3, 0) == tuple(sum(row[i] for row in rows) for i in (1, 2, 3))

    async def test_jobs_of_one_request_with_results_as_json(self, filled: Filled) -> None:
        """Finds the request's three jobs; ``result::json`` gives the result as JSON."""
        assert 1 == SQL[4].count(REQUEST_ID)
        rows = await run(filled.schema, SQL[4])
        expected = [
            ("mail", "failed", None),
            ("mail", "failed", None),
            ("ok", "succeeded", {"sent": True}),
        ]
        assert expected == sorted((row[1], row[2], row[5]) for row in rows)

    async def test_the_request_id_index_builds_and_serves_the_query(self, filled: Filled) -> None:
        """The suggested index is made (twice is fine) and the planner can use it."""
        await run(filled.schema, SQL[5])
        await run(filled.schema, SQL[5])
        plan = await run(filled.schema, "EXPLAIN " + SQL[4], "SET enable_seqscan = off")
        assert "offload_jobs_request_id" in " ".join(str(row[0]) for row in plan)


class TestTables:
    async def test_the_columns_table_names_every_column_in_order(
        self, fresh: tuple[str, PostgresStore]
    ) -> None:
        """The documented columns and types are the table's, so the page cannot drift."""
        name, _ = fresh
        documented = [
            (row[0].strip("`"), row[1]) for row in table_after("`offload_jobs`, one row per job")
        ]
        rows = await run(
            name,
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{name}' AND table_name = 'offload_jobs' "
            "ORDER BY ordinal_position",
        )
        short = {"timestamp with time zone": "timestamptz"}
        assert [(str(c), short.get(str(t), str(t))) for c, t in rows] == documented

    async def test_the_indexes_table_names_every_index(
        self, fresh: tuple[str, PostgresStore]
    ) -> None:
        """Every index offload makes on the jobs table is listed, and no other."""
        name, _ = fresh
        documented = {row[0].strip("`") for row in table_after("The indexes, and what each")}
        rows = await run(
            name,
            f"SELECT indexname FROM pg_indexes WHERE schemaname = '{name}' "
            "AND tablename = 'offload_jobs'",
        )
        assert {str(r[0]) for r in rows} == documented

    async def test_the_tables_named_are_the_schemas(self, fresh: tuple[str, PostgresStore]) -> None:
        """The page describes each table offload makes in the schema."""
        name, _ = fresh
        rows = await run(
            name, f"SELECT tablename FROM pg_tables WHERE schemaname = '{name}' ORDER BY 1"
        )
        tables = [str(r[0]) for r in rows]
        expected = [
            "offload_buckets",
            "offload_jobs",
            "offload_layout",
            "offload_schedules",
            "offload_workers",
        ]
        assert expected == tables
        for table in tables:
            assert f"`{table}`" in TEXT

    async def test_the_states_table_names_every_state(self) -> None:
        """The states listed are the ones the table's CHECK allows."""
        from offload.records import JobState

        documented = [row[0].strip("`") for row in table_after("The states:")]
        assert [s.value for s in JobState] == documented


class TestOptionsAndLayout:
    def test_the_options_table_is_the_parsers(self) -> None:
        """Every option of offload's own is listed with the default the parser uses."""
        rows = table_after("## URL")
        documented = {row[0].strip("`"): row[1].strip("`") for row in rows}
        assert set(options._OWN) == set(documented)
        parsed = options.parse_postgres_url("postgresql://h/db")
        defaults = {
            "schema": parsed.schema,
            "op_timeout": parsed.op_timeout,
            "pool_max": parsed.pool_max,
            "migrate": parsed.migrate,
            "listen": parsed.listen,
            "poll": parsed.poll,
            "prepare": parsed.prepare,
        }
        for option, default in defaults.items():
            shown = documented[option]
            if isinstance(default, bool):
                assert str(default).lower() == shown, option
            elif isinstance(default, float):
                assert default == float(shown), option
            else:
                assert str(default) == shown, option

    def test_both_schemes(self) -> None:
        """``postgres://`` is accepted as ``postgresql://``."""
        assert "postgres://user:password@host:5432/database" in TEXT
        assert options.parse_postgres_url("postgres://h/db").conninfo.startswith("postgresql://")

    async def test_the_longest_schema_named_takes_jobs(self) -> None:
        """A schema name of the length the page gives works end to end: its notification
        channel (``offload_<schema>``) still fits PostgreSQL's 63-character names."""
        longest = int(re.findall(r"Keep it to (\d+) characters", TEXT)[0])
        name = "s" * longest
        store = PostgresStore(postgres_url(name))
        try:
            await store.open()
        except StoreUnavailable as exc:
            postgres_unreachable(exc)
        try:
            assert 63 == len(store.opts.channel)
            [job] = await store.enqueue([new_job("t")])
            assert await store.get(job.id) is not None
        finally:
            await store.close()
            await drop_postgres_schema(name)

    def test_names_the_layout_version_of_this_release(self) -> None:
        """The version the page gives is the one this code writes, and it names the latest
        migration file, so neither goes stale when a step is added."""
        version = schema.SCHEMA_VERSION
        assert f"`offload_layout` (today `{version}`)" in TEXT
        assert f"-----\n   {version}\n" in TEXT
        assert f"migrated to layout version {version} (applied {version:04d})" in TEXT
        assert f"`{version:04d}_" in TEXT


class TestPythonSamples:
    def test_the_samples_compile(self) -> None:
        """Both samples are valid Python."""
        for sample in PYTHON:
            compile(sample, str(DOC), "exec")

    async def test_the_endpoint_and_the_batch_commit_orders_with_their_jobs(self) -> None:
        """Run against the real server: the endpoint's order and its job are both stored,
        and the psycopg batch stores one job per order it inserted."""
        name = f"test_{uuid.uuid4().hex}"
        app_url = f"{POSTGRES_URL}?options=-csearch_path%3D{name}"
        code = PYTHON[0] + "\n" + PYTHON[1]
        assert 1 == code.count(f'"{SAMPLE_DATABASE}"')
        assert 1 == code.count("Offload(DATABASE)")
        code = code.replace(f'"{SAMPLE_DATABASE}"', repr(app_url))
        code = code.replace("Offload(DATABASE)", f"Offload({postgres_url(name)!r})")
        ns: dict[str, Any] = {"__name__": "docs_sample"}
        exec(compile(code, str(DOC), "exec"), ns)
        jobs = ns["jobs"]
        try:
            try:
                await jobs.open()
            except StoreUnavailable as exc:
                postgres_unreachable(exc)
            await run(name, "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)")
            answer = await ns["create_order"](ns["NewOrder"](item="book"))
            made = await ns["import_orders"](["pen", "ink"])
            orders = await run(name, "SELECT id, item FROM orders ORDER BY id")
            assert [(1, "book"), (2, "pen"), (3, "ink")] == orders
            job = await jobs.store.get(answer["job_id"])
            assert job is not None
            assert "confirm_order" == job.task.rsplit(".", 1)[-1]
            assert [1] == [*json.loads(job.args), *json.loads(job.kwargs).values()]
            assert 2 == len(made)
            for job_id in made:
                assert await jobs.store.get(job_id) is not None
        finally:
            await jobs.close()
            await ns["engine"].dispose()
            await drop_postgres_schema(name)
