"""One ``store`` fixture, parametrised over every store, against real servers; and a
redis-server of a test's own, for tests that crash it or change its settings."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import psycopg
import psycopg.sql
import pytest
import redis.asyncio

from offload.errors import StoreUnavailable
from offload.stores import Store, open_store
from tests.conftest import IN_CI

# postgres-poll: the PostgreSQL store as behind PgBouncer in transaction mode (no LISTEN, no
# prepared statements), waking by its poll alone.
STORES = ["memory", "sqlite", "redis", "postgres", "postgres-poll"]
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server is missing, or fail it under CI, where it must be there."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def redis_unreachable(exc: BaseException) -> NoReturn:
    unavailable(f"Redis not reachable at 127.0.0.1:6379: {exc}")


def postgres_unreachable(exc: BaseException) -> NoReturn:
    unavailable(f"PostgreSQL not reachable at 127.0.0.1:5432 (database test): {exc}")


def postgres_url(schema: str, **options: str) -> str:
    """The shared server's test database, in a schema of the test's own."""
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"{POSTGRES_URL}?schema={schema}&op_timeout=5{extra}"


async def drop_postgres_schema(schema: str) -> None:
    """Remove a test's schema (and every table in it) from the shared database."""
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    async with conn:
        await conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )


@contextlib.asynccontextmanager
async def postgres_stores(n: int) -> AsyncIterator[list[Store]]:
    """``n`` PostgreSQL stores on one new schema, each with its own pool, so that their
    calls meet only in the server (as separate processes' would); the schema is dropped
    afterwards."""
    from offload.stores.postgres import PostgresStore

    schema = f"test_{uuid.uuid4().hex}"
    opened: list[Store] = [PostgresStore(postgres_url(schema)) for _ in range(n)]
    try:
        for one in opened:
            await one.open()
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    try:
        yield opened
    finally:
        for one in opened:
            await one.close()
        await drop_postgres_schema(schema)


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
        "postgres": postgres_url(prefix.replace("-", "_")),
        "postgres-poll": postgres_url(
            prefix.replace("-", "_"), listen="false", prepare="false", poll="0.2"
        ),
    }[kind]
    s = open_store(url)
    try:
        await s.open()
    except StoreUnavailable as exc:
        if kind == "redis":
            redis_unreachable(exc)
        if kind.startswith("postgres"):
            postgres_unreachable(exc)
        raise
    try:
        yield s
    finally:
        await s.close()
        if kind == "redis":
            await drop_redis_keys(prefix)
        if kind.startswith("postgres"):
            await drop_postgres_schema(prefix.replace("-", "_"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A redis-server of our own (AOF, fsync on every write) that the test may crash."""

    def __init__(self, tmp: Path, binary: str) -> None:
        self.port = _free_port()
        self.dir = tmp
        self.binary = binary
        self.password = "chaos-secret"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0?prefix=chaos&op_timeout=3"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--requirepass", self.password,
                "--logfile", str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def unstarted_redis(tmp_path: Path) -> OwnRedis:
    """A redis-server of the test's own, not started yet (its port refuses connections)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (needed for a server of the test's own)")
    return OwnRedis(tmp_path, binary)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = unstarted_redis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
