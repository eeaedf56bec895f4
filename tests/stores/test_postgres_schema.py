"""The PostgreSQL store's tables on a real server: created on open (or by ``offload
migrate``, also twice at once), kept in the schema the URL names, and every way opening can go
wrong answered with one error that names the fix."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from offload.errors import ConfigError, StoreUnavailable
from offload.stores import ClaimRequest, open_store
from offload.stores.postgres import PostgresStore, schema
from offload.testing.inputs import new_job
from tests.stores.conftest import (
    POSTGRES_URL,
    drop_postgres_schema,
    postgres_unreachable,
    postgres_url,
)
from tests.stores.pg_server import OwnPostgres
from tests.stores.pg_server import own_postgres as own_postgres  # the fixture, used by name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fresh() -> AsyncIterator[str]:
    """A schema name nobody has used; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    try:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, connect_timeout=5)
        await conn.close()
    except psycopg.OperationalError as exc:
        postgres_unreachable(exc)
    try:
        yield name
    finally:
        await drop_postgres_schema(name)


async def sql(query: str) -> list[tuple[object, ...]]:
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    async with conn:
        cur = await conn.execute(query)
        return await cur.fetchall() if cur.description is not None else []


def offload(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OFFLOAD_URL"}
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


class TestMigrate:
    async def test_open_creates_the_tables_in_the_named_schema(self, fresh: str) -> None:
        store = PostgresStore(postgres_url(fresh))
        await store.open()
        await store.close()
        tables = await sql(
            f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{fresh}'"
        )
        expected = {
            "offload_jobs",
            "offload_schedules",
            "offload_layout",
            "offload_workers",
            "offload_buckets",
        }
        assert expected == {t[0] for t in tables}
        assert [(schema.SCHEMA_VERSION,)] == await sql(
            f'SELECT version FROM "{fresh}".offload_layout'
        )

    async def test_two_migrate_commands_at_once_migrate_once(self, fresh: str) -> None:
        url = postgres_url(fresh)
        env = {k: v for k, v in os.environ.items() if k != "OFFLOAD_URL"}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "offload.cli",
                "migrate",
                "--url",
                url,
                "--json",
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        outputs = [await p.communicate() for p in procs]
        assert [0, 0] == [p.returncode for p in procs], outputs
        applied = sorted(json.loads(out)["applied"] for out, _ in outputs)
        assert [[], list(range(schema.SCHEMA_VERSION + 1))] == applied
        assert [(1,)] == await sql(f'SELECT count(*) FROM "{fresh}".offload_layout')

    async def test_migrate_again_changes_nothing(self, fresh: str) -> None:
        url = postgres_url(fresh)
        first = offload("migrate", "--url", url)
        again = offload("migrate", "--url", url)
        assert 0 == first.returncode, first.stderr
        assert f"migrated to layout version {schema.SCHEMA_VERSION}" in first.stdout
        assert f"already at layout version {schema.SCHEMA_VERSION}" in again.stdout

    async def test_with_migrate_off_a_missing_schema_is_refused_naming_the_command(
        self, fresh: str
    ) -> None:
        store = PostgresStore(postgres_url(fresh, migrate="false"))
        with pytest.raises(ConfigError, match=r"no offload tables.*run `offload migrate"):
            await store.open()
        assert [] == await sql(
            f"SELECT 1 FROM information_schema.schemata WHERE schema_name = '{fresh}'"
        )
        assert 0 == offload("migrate", "--url", postgres_url(fresh, migrate="false")).returncode
        await store.open()
        await store.close()

    async def test_a_newer_layout_is_refused_untouched(self, fresh: str) -> None:
        store = PostgresStore(postgres_url(fresh))
        await store.open()
        await store.close()
        newer = schema.SCHEMA_VERSION + 1
        await sql(f'INSERT INTO "{fresh}".offload_layout (version) VALUES ({newer})')
        with pytest.raises(ConfigError, match=f"layout version {newer}, written by a newer"):
            await PostgresStore(postgres_url(fresh)).open()
        result = offload("migrate", "--url", postgres_url(fresh))
        assert 2 == result.returncode
        assert "upgrade offload in every process" in result.stderr


class TestSchemas:
    async def test_two_schemas_keep_their_jobs_and_wake_ups_apart(self, fresh: str) -> None:
        other = f"{fresh}_b"
        a = open_store(postgres_url(fresh))
        b = open_store(postgres_url(other))
        await a.open()
        await b.open()
        try:
            waiting = asyncio.create_task(b.wait(None, 0.5))
            await asyncio.sleep(0.05)
            await a.enqueue([new_job()])
            loop = asyncio.get_running_loop()
            started = loop.time()
            await waiting
            assert loop.time() - started > 0.3, "a job in another schema woke the worker"
            assert [] == await b.claim(ClaimRequest("w", 30.0))
            assert 1 == len(await a.claim(ClaimRequest("w", 30.0)))
        finally:
            await a.close()
            await b.close()
            await drop_postgres_schema(other)


class TestOpening:
    async def test_a_missing_database_names_the_fix(self) -> None:
        store = PostgresStore("postgresql://postgres@127.0.0.1:5432/no_such_database_here")
        with pytest.raises(ConfigError, match="does not exist; create it"):
            await store.open()

    async def test_a_missing_user_names_the_fix(self) -> None:
        store = PostgresStore("postgresql://nobody_at_all@127.0.0.1:5432/test")
        with pytest.raises(ConfigError, match="name an existing user"):
            await store.open()

    async def test_nothing_listening_is_unavailable_within_the_timeout(self) -> None:
        store = PostgresStore("postgresql://postgres@127.0.0.1:1/test?op_timeout=2")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable, match="check that the server is running"):
            await store.open()
        assert loop.time() - started < 10

    def test_the_cli_says_it_in_one_line(self) -> None:
        result = offload("info", "--url", "postgresql://postgres@127.0.0.1:5432/no_such_db")
        assert 2 == result.returncode
        assert 1 == len(result.stderr.splitlines()), result.stderr
        assert "Traceback" not in result.stderr


class TestLogin:
    @pytest.mark.timeout(60)
    async def test_a_wrong_password_names_the_fix_and_the_right_one_opens(
        self, own_postgres: OwnPostgres
    ) -> None:
        """On a server that asks for passwords (its own, so the shared one stays trusted)."""
        own_postgres.require_password("right-horse")
        base = f"postgresql://postgres:{{}}@127.0.0.1:{own_postgres.port}/postgres?schema=login"
        wrong = PostgresStore(base.format("wrong-horse"))
        with pytest.raises(ConfigError, match="refused the login") as info:
            await wrong.open()
        assert "wrong-horse" not in str(info.value)
        assert "check the user and password in the URL" in str(info.value)
        right = PostgresStore(base.format("right-horse"))
        await right.open()
        await right.close()
