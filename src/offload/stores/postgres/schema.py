"""The PostgreSQL layout version and the steps that bring an older schema up to it.

Step ``N`` is ``migrations/NNNN_<what>.sql`` and brings the schema to version ``N``; the
version is the highest one recorded in ``offload_layout``. Migrations run in one
transaction under an advisory lock keyed by the schema's name, so that two processes that
start together (or ``offload migrate`` beside a starting worker) migrate once: the second
waits for the first, then finds nothing left to do. A process refuses a schema of a newer
version than its own: an older process would write rows without what the newer layout keeps.
"""

from __future__ import annotations

import hashlib

import psycopg

from offload.errors import ConfigError
from offload.stores import sqlfiles
from offload.stores.postgres.options import PostgresOptions

PACKAGE = "offload.stores.postgres"
MIGRATIONS = sqlfiles.migrations(PACKAGE)
SCHEMA_VERSION = max(MIGRATIONS)


def lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory lock key for migrating ``schema``."""
    digest = hashlib.blake2b(f"offload migrate {schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _too_new(version: int, opts: PostgresOptions) -> ConfigError:
    return ConfigError(
        f"the offload tables in schema {opts.schema!r} of {opts.display_url} have layout "
        f"version {version}, written by a newer offload than this one (which knows up to "
        f"{SCHEMA_VERSION}); upgrade offload in every process that uses them, or use "
        "another schema"
    )


async def version(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    queries: dict[str, str],
    opts: PostgresOptions,
) -> int | None:
    """The schema's layout version, or ``None`` when offload's tables are not there yet."""
    cur = await conn.execute(
        queries["layout_exists"], {"table": f"{opts.quoted_schema}.offload_layout"}
    )
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    cur = await conn.execute(queries["layout_version"])
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(str(row[0]))


async def migrate(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    queries: dict[str, str],
    opts: PostgresOptions,
    to: int = SCHEMA_VERSION,
) -> list[int]:
    """Apply the missing steps up to ``to``; returns the numbers applied (none when the
    schema was up to date). ``conn`` must be in autocommit mode: the steps run in a
    transaction of their own here."""
    async with conn.transaction():
        await conn.execute(queries["migration_lock"], {"key": lock_key(opts.schema)})
        await conn.execute(queries["create_schema"])
        await conn.execute(queries["create_layout"])
        current = await version(conn, queries, opts)
        if current is not None and current > SCHEMA_VERSION:
            raise _too_new(current, opts)
        first = 0 if current is None else current + 1
        applied = list(range(first, to + 1))
        for number in applied:
            _, text = MIGRATIONS[number]
            # A whole file at once: with no parameters psycopg sends it as one simple
            # query, which PostgreSQL runs statement by statement in this transaction.
            await conn.execute(text.replace("{schema}", opts.quoted_schema).encode())
        if applied:
            await conn.execute(queries["set_layout_version"], {"version": applied[-1]})
        return applied


async def check(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    queries: dict[str, str],
    opts: PostgresOptions,
) -> None:
    """With migrations turned off: refuse a schema that is missing, older or newer."""
    current = await version(conn, queries, opts)
    if current is None or current < SCHEMA_VERSION:
        found = "no offload tables" if current is None else f"layout version {current}"
        raise ConfigError(
            f"schema {opts.schema!r} of {opts.display_url} has {found}, and this offload "
            f"needs version {SCHEMA_VERSION}; run `offload migrate --url URL` (or drop "
            "migrate=false from the URL so that the store migrates on start)"
        )
    if current > SCHEMA_VERSION:
        raise _too_new(current, opts)
