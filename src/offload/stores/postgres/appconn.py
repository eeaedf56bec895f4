"""The psycopg connection under what an application hands to ``enqueue(connection=...)``,
so that a job joins the application's own transaction (``PostgresStore.enqueue_in``)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import TupleRow

from offload.errors import ConfigError

Conn = psycopg.AsyncConnection[TupleRow]


async def psycopg_connection(connection: Any) -> Conn:
    """The psycopg ``AsyncConnection`` under what an application holds: the connection
    itself, or SQLAlchemy's ``AsyncConnection`` / ``AsyncSession`` on the psycopg driver
    (``postgresql+psycopg://``), whose current transaction the job then joins."""
    if isinstance(connection, psycopg.AsyncConnection):
        return connection
    # By the type, not the instance: SQLAlchemy's AsyncConnection raises on `.connection`.
    kind = type(connection)
    if not hasattr(kind, "get_raw_connection") and callable(getattr(kind, "connection", None)):
        connection = await connection.connection()  # an AsyncSession: its connection, begun
    get_raw = getattr(connection, "get_raw_connection", None)
    if callable(get_raw):
        raw = await get_raw()
        driver = getattr(raw, "driver_connection", None)
        if isinstance(driver, psycopg.AsyncConnection):
            return driver
    raise ConfigError(
        f"enqueue(connection=...) takes a psycopg AsyncConnection, or a SQLAlchemy "
        f"AsyncConnection or AsyncSession on psycopg (postgresql+psycopg://), not "
        f"{type(connection).__name__}"
    )
