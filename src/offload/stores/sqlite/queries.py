"""The SQLite store's SQL, read once from the ``.sql`` files beside this module.

Layout: ``queries.sql`` holds every query the store runs, each under a header line
``-- name: <name>``; the text up to the next header is the query. Lines that start with
``--`` are comments (for readers of the file) and are dropped, so comments go on lines of
their own, never after SQL on the same line; the remaining lines are joined by single
spaces and a final ``;`` is dropped, so a query can be a fragment that Python appends to
another one. A query that holds ``{slot}`` is a template, filled by ``str.format`` where its
caller says so: for what SQLite cannot bind as a parameter (a variable number of ``?``, an
optional ``WHERE`` clause built from named fragments, a ``PRAGMA`` value).

``migrations/NNNN_<what>.sql`` are the numbered layout steps (see ``schema``), read whole and
split into statements here.

Every module binds the queries it runs to module constants at import, so the hot path reads
a constant as it always did and never touches a file. Transaction control (``BEGIN
IMMEDIATE``, ``COMMIT``, savepoints) stays in the Python that groups operations into
transactions: it is that code's control flow, not a query.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

PACKAGE = "offload.stores.sqlite"

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$")
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def parse(text: str, source: str = "<sql>") -> dict[str, str]:
    """The named queries of one file's ``text``; raises ``ValueError`` on a malformed one."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def done() -> None:
        if name is None:
            if lines:
                raise ValueError(f"{source}: SQL before the first '-- name:' header")
            return
        body = " ".join(lines).removesuffix(";").rstrip()
        if not body:
            raise ValueError(f"{source}: query {name!r} is empty")
        queries[name] = body

    for line in text.splitlines():
        header = _HEADER.match(line.strip())
        if header is not None:
            done()
            name, lines = header.group(1), []
            if name in queries:
                raise ValueError(f"{source}: query {name!r} is defined twice")
            continue
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            lines.append(stripped)
    done()
    return queries


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
    return parse(resources.files(PACKAGE).joinpath(file).read_text(), file)


def load_migrations() -> dict[int, list[str]]:
    """Each numbered step's statements, by number; raises ``ValueError`` unless the numbers
    run from 0 without a gap (a missing file would leave a version no step produces)."""
    folder = resources.files(PACKAGE).joinpath("migrations")
    steps: dict[int, list[str]] = {}
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in steps:
            raise ValueError(f"two migrations numbered {number}")
        steps[number] = statements(entry.read_text(), entry.name)
    if sorted(steps) != list(range(len(steps))):
        raise ValueError(f"migrations must be numbered 0000 upwards with no gap: {sorted(steps)}")
    return dict(sorted(steps.items()))


QUERIES = load()
