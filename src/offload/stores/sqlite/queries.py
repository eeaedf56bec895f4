"""The SQLite store's SQL, read once from the ``.sql`` files beside this module (the layout
of those files is in ``offload.stores.sqlfiles``). Transaction control (``BEGIN IMMEDIATE``,
``COMMIT``, savepoints) stays in the Python that groups operations into transactions."""

from __future__ import annotations

import sqlite3

from offload.stores import sqlfiles

PACKAGE = "offload.stores.sqlite"


def statements(script: str, source: str = "<sql>") -> list[str]:
    """A script's statements, one by one, so that they can run inside a transaction the
    caller holds (``executescript`` would commit it first)."""
    found: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if any(s.strip() and not s.strip().startswith("--") for s in pending.splitlines()):
        raise ValueError(f"{source}: a statement at the end lacks its ';'")
    return found


def load(file: str = "queries.sql") -> dict[str, str]:
    return sqlfiles.load(PACKAGE, file)


def load_migrations() -> dict[int, list[str]]:
    """Each numbered step's statements, by number (``sqlfiles.migrations`` checks them)."""
    return {n: statements(text, name) for n, (name, text) in sqlfiles.migrations(PACKAGE).items()}


QUERIES = load()
