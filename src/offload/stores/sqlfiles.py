"""Named queries and numbered migrations kept as ``.sql`` files beside a store's module.

Layout: ``queries.sql`` holds every query a store runs, each under a header line
``-- name: <name>``; the text up to the next header is the query. Lines that start with
``--`` are comments (for readers of the file) and are dropped, so comments go on lines of
their own, never after SQL on the same line; the remaining lines are joined by single
spaces and a final ``;`` is dropped, so a query can be a fragment that Python appends to
another one. A query that holds ``{slot}`` is a template, filled by ``str.format`` where its
caller says so: for what the database cannot bind as a parameter (a variable number of
parameters, an optional ``WHERE`` clause built from named fragments, a schema name).

``migrations/NNNN_<what>.sql`` are a store's numbered layout steps, read whole; each store
runs them its own way (SQLite statement by statement inside its transaction, PostgreSQL as
one script under an advisory lock).

Every module binds the queries it runs to constants at import or when its store is built,
so the hot path never touches a file. Transaction control stays in the Python that groups
operations into transactions: it is that code's control flow, not a query.
"""

from __future__ import annotations

import re
from importlib import resources

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


def load(package: str, file: str = "queries.sql") -> dict[str, str]:
    """The named queries of ``file`` in ``package``."""
    return parse(resources.files(package).joinpath(file).read_text(), file)


def migrations(package: str) -> dict[int, tuple[str, str]]:
    """Each numbered step of ``package``'s ``migrations`` folder as (file name, text), by
    number; raises ``ValueError`` unless the numbers run from 0 without a gap (a missing file
    would leave a version no step produces)."""
    folder = resources.files(package).joinpath("migrations")
    steps: dict[int, tuple[str, str]] = {}
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in steps:
            raise ValueError(f"two migrations numbered {number}")
        steps[number] = (entry.name, entry.read_text())
    if sorted(steps) != list(range(len(steps))):
        raise ValueError(f"migrations must be numbered 0000 upwards with no gap: {sorted(steps)}")
    return dict(sorted(steps.items()))
