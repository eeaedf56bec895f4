"""The SQLite file's layout version and the steps that bring an older file up to it.

The version lives in SQLite's ``user_version`` header field; step ``N`` is the file
``migrations/NNNN_<what>.sql`` and brings a file to version ``N``. 0 is a file from before
the field was kept (with or without ``offload_counts``); 1 adds the totals. A process
refuses a file of a higher version than its own: an older process would write rows without
keeping what the newer layout keeps (its totals, say), and nothing would tell either of them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from offload.errors import ConfigError
from offload.stores.sqlite.queries import QUERIES, load_migrations

MIGRATIONS = load_migrations()
SCHEMA_VERSION = max(MIGRATIONS)

_USER_VERSION = QUERIES["user_version"]
_SET_USER_VERSION = QUERIES["set_user_version"]
_COUNTS_TABLE_EXISTS = QUERIES["counts_table_exists"]
_HISTORY_COLUMN_EXISTS = QUERIES["history_column_exists"]
_FLOW_COLUMNS_EXIST = QUERIES["flow_columns_exist"]


def _counts_kept_already(conn: sqlite3.Connection) -> bool:
    """Whether step 1 finds the totals there already, on a file from before versioning
    (offload kept them for a while before it kept ``user_version``): its totals are right,
    and the step's backfill would count every job twice. SQL can ask whether a table exists
    but not make the statements after it depend on the answer, so the check is here."""
    return conn.execute(_COUNTS_TABLE_EXISTS).fetchone() is not None


def _history_kept_already(conn: sqlite3.Connection) -> bool:
    """Whether step 5 finds its column there already: a file at version 0 runs every step
    again, and unlike ``CREATE ... IF NOT EXISTS`` SQLite has no ``ADD COLUMN`` that may
    find its column present."""
    return conn.execute(_HISTORY_COLUMN_EXISTS).fetchone() is not None


def _flow_kept_already(conn: sqlite3.Connection) -> bool:
    """Step 6's columns, as for step 5 (its tables and indexes go with its columns)."""
    return conn.execute(_FLOW_COLUMNS_EXIST).fetchone() is not None


# Steps skipped, by number, when the check says the file already holds what they add.
_SKIP_IF: dict[int, Callable[[sqlite3.Connection], bool]] = {
    1: _counts_kept_already,
    5: _history_kept_already,
    6: _flow_kept_already,
}


def check_version(conn: sqlite3.Connection) -> int:
    """The file's layout version; raises ``ConfigError`` if it is newer than this code's."""
    version: int = conn.execute(_USER_VERSION).fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"this SQLite file has layout version {version}, written by a newer offload than "
            f"this one (which knows up to {SCHEMA_VERSION}); upgrade offload in every process "
            "that uses the file, or point this one at another file"
        )
    return version


def migrate(conn: sqlite3.Connection, to: int = SCHEMA_VERSION) -> None:
    """Bring a new file, or one made by an older offload, up to ``SCHEMA_VERSION`` (or to
    the older version ``to``, which makes the file an older offload made, for tests).

    Under the write lock, so that two processes opening the same old file do not both
    migrate it, and no write lands between a backfill and the first use of what it filled.
    Step 0 runs on every file at version 0, since that version is both a new file and one
    made before versioning: it creates each object only if it is missing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = check_version(conn)  # again: another process may have moved it meanwhile
        first = 0 if version == 0 else version + 1
        for number in range(first, to + 1):
            skip = _SKIP_IF.get(number)
            if skip is not None and skip(conn):
                continue
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        if version < to:
            conn.execute(_SET_USER_VERSION.format(version=to))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
