"""docs/sqlite.md: its SQL runs on a real store file, its Python sample runs, and its table of
columns is the table's."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from offload.records import JobError
from offload.stores.base import ClaimRequest, Outcome, OutcomeKind
from offload.stores.sqlite import SQLiteStore, schema
from offload.testing.inputs import new_job

DOC = Path(__file__).resolve().parents[2] / "docs" / "sqlite.md"
TEXT = DOC.read_text(encoding="utf-8")
SQL = re.findall(r"```sql\n(.*?)```", TEXT, re.DOTALL)
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)


async def _file_with_failures(path: Path) -> None:
    """Two failures of ``mail``, one of ``report``, one success: as workers leave them."""
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        await store.enqueue([new_job(t) for t in ("mail", "mail", "report", "ok")])
        claimed = await store.claim(ClaimRequest("w", 30, 10))
        error = JobError("ValueError", "bad address", None)
        await store.complete(
            [
                Outcome(j.id, "w", j.attempt, OutcomeKind.SUCCEEDED, result="null")
                if j.task == "ok"
                else Outcome(j.id, "w", j.attempt, OutcomeKind.FAILED, error=error)
                for j in claimed
            ]
        )
    finally:
        await store.close()


class TestSqliteDocs:
    def test_there_are_samples(self) -> None:
        """The page has the samples these tests run."""
        assert 2 == len(SQL)
        assert 1 == len(PYTHON)

    async def test_failed_in_the_last_hour_by_task(self, tmp_path: Path) -> None:
        """The example queries count and show the failures workers just recorded."""
        path = tmp_path / "offload.db"
        await _file_with_failures(path)
        conn = sqlite3.connect(path)
        try:
            by_task = [row[:2] for row in conn.execute(SQL[0])]
            errors = [row[1:] for row in conn.execute(SQL[1])]
        finally:
            conn.close()
        assert [("mail", 2), ("report", 1)] == by_task
        failure = ("ValueError", "bad address")
        assert sorted([("mail", *failure), ("mail", *failure), ("report", *failure)]) == sorted(
            errors
        )

    async def test_backup_sample_copies_the_jobs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The backup from Python makes a file holding every job."""
        monkeypatch.chdir(tmp_path)
        await _file_with_failures(tmp_path / "offload.db")
        exec(compile(PYTHON[0], str(DOC), "exec"), {"__name__": "docs_sample"})
        conn = sqlite3.connect(tmp_path / "offload-backup.db")
        try:
            assert [(4,)] == conn.execute("SELECT count(*) FROM offload_jobs").fetchall()
        finally:
            conn.close()

    async def test_the_columns_table_names_every_column_in_order(self, tmp_path: Path) -> None:
        """The documented columns and types are the table's, so the page cannot drift."""
        path = tmp_path / "offload.db"
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.close()
        section = TEXT.split("`offload_jobs`, one row per job", 1)[1].split("\n\n", 2)[1]
        documented = re.findall(r"^\| `(\w+)` \| (\w+) \|", section, re.MULTILINE)
        conn = sqlite3.connect(path)
        try:
            actual = [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(offload_jobs)")]
        finally:
            conn.close()
        assert actual == documented


def test_names_the_layout_version_of_this_release() -> None:
    """The version the page says a file records is the one this code writes, and the page
    names the latest migration file, so neither goes stale when a step is added."""
    assert f"`PRAGMA user_version`, today `{schema.SCHEMA_VERSION}`)" in TEXT
    assert f'"PRAGMA user_version"\n{schema.SCHEMA_VERSION}\n' in TEXT
    assert f"`{schema.SCHEMA_VERSION:04d}_" in TEXT
