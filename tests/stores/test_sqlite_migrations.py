"""SQLite files of every older layout are brought up to the latest on open, once, and keep
their jobs; a file of a newer layout is refused."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from offload.errors import ConfigError
from offload.records import JobState
from offload.stores.base import ClaimRequest, Outcome, OutcomeKind
from offload.stores.sqlite import SQLiteStore, schema
from offload.testing.inputs import new_job
from tests.stores.sqlite_files import layout_version, recount

# The layouts of files made before they recorded a version (user_version 0), written out by
# hand as those versions of offload made them, so that the test does not build them with the
# code under test.
_JOBS = """
CREATE TABLE IF NOT EXISTS offload_jobs (
    id TEXT PRIMARY KEY, task TEXT NOT NULL, queue TEXT NOT NULL, args TEXT NOT NULL,
    kwargs TEXT NOT NULL, state TEXT NOT NULL, priority INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, run_at REAL NOT NULL,
    enqueued_at REAL NOT NULL, timeout REAL, started_at REAL, finished_at REAL,
    lease_until REAL, worker_id TEXT, key TEXT, result TEXT, error TEXT, progress TEXT,
    meta TEXT NOT NULL DEFAULT '{}', cancel_requested INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS offload_jobs_key
    ON offload_jobs (task, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS offload_jobs_lease
    ON offload_jobs (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS offload_jobs_finished
    ON offload_jobs (finished_at) WHERE finished_at IS NOT NULL;
"""
# The first: a claim index over all queues, no queue registry, no schedules, no totals.
FIRST = (
    _JOBS
    + """
CREATE INDEX IF NOT EXISTS offload_jobs_claim_all
    ON offload_jobs (priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS offload_jobs_claim_queue
    ON offload_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
"""
)
_LATER = (
    _JOBS
    + """
CREATE INDEX IF NOT EXISTS offload_jobs_claim_queue
    ON offload_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE TABLE IF NOT EXISTS offload_queues (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offload_schedules (
    name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0, fired_until REAL
) WITHOUT ROWID;
"""
)
# One claim index and the queue registry, no totals yet.
QUEUES = _LATER
# The totals kept already, before the version was.
COUNTS = (
    _LATER
    + """
CREATE TABLE offload_counts (
    queue TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (queue, state)
) WITHOUT ROWID;
"""
)

# Every table and index of the latest layout.
LATEST = {
    ("table", "offload_jobs"),
    ("table", "offload_queues"),
    ("table", "offload_schedules"),
    ("table", "offload_counts"),
    ("table", "offload_workers"),
    ("table", "offload_buckets"),
    ("table", "offload_steps"),
    ("index", "offload_jobs_key"),
    ("index", "offload_jobs_claim_queue"),
    ("index", "offload_jobs_lease"),
    ("index", "offload_jobs_finished"),
    ("index", "offload_jobs_conc_running"),
    ("index", "offload_jobs_conc_held"),
    ("index", "offload_jobs_capped"),
    ("index", "offload_steps_workflow"),
}


def _by_hand(layout: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.executescript(layout)
        finally:
            conn.close()

    return make


def _by_migrations(version: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            schema.migrate(conn, to=version)
        finally:
            conn.close()

    return make


OLD_FILES = {
    "v0-first-layout": _by_hand(FIRST),
    "v0-with-queue-registry": _by_hand(QUEUES),
    "v0-with-totals": _by_hand(COUNTS),
    **{f"v{n}-by-migrations": _by_migrations(n) for n in range(schema.SCHEMA_VERSION)},
}


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def _enqueue_as_old_offload(path: Path, queues: str) -> list[str]:
    """Queued jobs, one per letter of ``queues``, written as the offload that made the file
    wrote them: the queue registry and the totals only where the file has them."""
    conn = sqlite3.connect(path, isolation_level=None)
    ids = [f"job-{i:03d}" for i in range(len(queues))]
    try:
        conn.execute("BEGIN IMMEDIATE")
        tables = _tables(conn)
        for job_id, queue in zip(ids, queues, strict=True):
            conn.execute(
                "INSERT INTO offload_jobs (id, task, queue, args, kwargs, state, priority, "
                "attempt, max_attempts, run_at, enqueued_at, timeout, key, meta) "
                "VALUES (?, 't', ?, '[]', '{}', 'queued', 0, 0, 3, 1.0, 1.0, NULL, NULL, '{}')",
                (job_id, queue),
            )
            if "offload_queues" in tables:
                conn.execute("INSERT OR IGNORE INTO offload_queues (name) VALUES (?)", (queue,))
            if "offload_counts" in tables:
                conn.execute(
                    "INSERT INTO offload_counts (queue, state, n) VALUES (?, 'queued', 1) "
                    "ON CONFLICT (queue, state) DO UPDATE SET n = n + 1",
                    (queue,),
                )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return ids


def _layout(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows: list[tuple[str, str, str]] = conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()
    return rows


class TestAnOlderFile:
    @pytest.mark.parametrize("make", OLD_FILES.values(), ids=OLD_FILES.keys())
    async def test_is_brought_up_to_the_latest_layout_and_keeps_its_jobs(
        self, tmp_path: Path, make: Callable[[Path], None]
    ) -> None:
        """Jobs enqueued by the older offload are counted once, claimed and completed by
        this one, and the file records the latest version."""
        path = tmp_path / "old.db"
        make(path)
        ids = _enqueue_as_old_offload(path, "aab")
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            assert {("a", JobState.QUEUED): 2, ("b", JobState.QUEUED): 1} == await store.counts()
            claimed = await store.claim(ClaimRequest("w", 30, 10, ["a", "b"]))
            assert sorted(ids) == sorted(j.id for j in claimed)
            outcomes = [Outcome(j.id, "w", j.attempt, OutcomeKind.SUCCEEDED) for j in claimed]
            assert [True] * 3 == await store.complete(outcomes)
            for job_id in ids:
                job = await store.get(job_id)
                assert job is not None
                assert JobState.SUCCEEDED == job.state
            assert recount(path) == await store.counts()
        finally:
            await store.close()
        assert schema.SCHEMA_VERSION == layout_version(path)
        assert LATEST <= {(kind, name) for kind, name, _ in _layout(path)}

    async def test_of_the_first_layout_is_claimed_from_every_queue(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        _by_hand(FIRST)(path)
        ids = _enqueue_as_old_offload(path, "ab")
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            claimed = await store.claim(ClaimRequest("w", 30, 10))
            assert sorted(ids) == sorted(j.id for j in claimed)
        finally:
            await store.close()


class TestANewFile:
    async def test_gets_every_migration(self, tmp_path: Path) -> None:
        """The layout equals that of every migration file run in order by hand."""
        path = tmp_path / "new.db"
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.close()
        by_hand = tmp_path / "by-hand.db"
        folder = resources.files("offload.stores.sqlite").joinpath("migrations")
        files = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
        assert [f"{n:04d}" for n in range(schema.SCHEMA_VERSION + 1)] == [f[:4] for f in files]
        conn = sqlite3.connect(by_hand, isolation_level=None)
        try:
            for name in files:
                conn.executescript(folder.joinpath(name).read_text())
        finally:
            conn.close()
        assert _layout(by_hand) == _layout(path)
        assert LATEST == {(kind, name) for kind, name, _ in _layout(path)}
        assert schema.SCHEMA_VERSION == layout_version(path)

    async def test_opened_twice_is_left_as_it_was(self, tmp_path: Path) -> None:
        """A second open migrates nothing: the layout, the version and the totals stay."""
        path = tmp_path / "jobs.db"
        url = f"sqlite:///{path}"
        store = SQLiteStore(url)
        await store.open()
        try:
            await store.enqueue([new_job(queue=q) for q in "aab"])
            counts = await store.counts()
        finally:
            await store.close()
        layout = _layout(path)
        again = SQLiteStore(url)
        await again.open()
        try:
            assert counts == await again.counts()
            assert 3 == len(await again.claim(ClaimRequest("w", 30, 10)))
        finally:
            await again.close()
        assert layout == _layout(path)
        assert schema.SCHEMA_VERSION == layout_version(path)


_OPEN = """
import asyncio, sys, time
from offload.stores.sqlite import SQLiteStore

async def main() -> None:
    store = SQLiteStore(sys.argv[1])
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    await store.open()
    try:
        print(sum((await store.counts()).values()))
    finally:
        await store.close()

asyncio.run(main())
"""


class TestOpenedAtOnce:
    def test_by_two_processes_both_succeed_and_migrate_once(self, tmp_path: Path) -> None:
        """Two processes that open the same old file at the same moment both open it, and
        the totals are filled once, not once each."""
        path = tmp_path / "old.db"
        _by_hand(QUEUES)(path)
        _enqueue_as_old_offload(path, "aab")
        start = time.time() + 2.0  # both past their imports by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN, f"sqlite:///{path}", str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [p.communicate(timeout=30) for p in procs]
        assert [(0, "3\n", "")] * 2 == [
            (p.returncode, out, err) for p, (out, err) in zip(procs, results, strict=True)
        ]
        assert schema.SCHEMA_VERSION == layout_version(path)
        assert {("a", JobState.QUEUED): 2, ("b", JobState.QUEUED): 1} == _totals(path)

    async def test_by_two_stores_in_one_process_both_succeed(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        _by_hand(QUEUES)(path)
        _enqueue_as_old_offload(path, "aab")
        stores = [SQLiteStore(f"sqlite:///{path}") for _ in range(2)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            for store in stores:
                assert 3 == sum((await store.counts()).values())
        finally:
            await asyncio.gather(*(s.close() for s in stores))
        assert schema.SCHEMA_VERSION == layout_version(path)
        assert {("a", JobState.QUEUED): 2, ("b", JobState.QUEUED): 1} == _totals(path)


class TestANewerFile:
    async def test_is_refused_with_the_fix_and_left_alone(self, tmp_path: Path) -> None:
        """A file that a newer offload migrated past this one's layout is refused before
        anything is written to it, and its jobs stay."""
        path = tmp_path / "jobs.db"
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            await store.enqueue([new_job(queue="a")])
        finally:
            await store.close()
        newer = schema.SCHEMA_VERSION + 1
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {newer}")
        conn.commit()
        conn.close()
        before = path.read_bytes()
        refused = SQLiteStore(f"sqlite:///{path}")
        with pytest.raises(
            ConfigError,
            match=rf"layout version {newer}, written by a newer offload .* knows up to "
            rf"{schema.SCHEMA_VERSION}\); upgrade offload in every process",
        ):
            await refused.open()
        assert before == path.read_bytes()
        assert newer == layout_version(path)
        assert {("a", JobState.QUEUED): 1} == recount(path)


def _totals(path: Path) -> dict[tuple[str, JobState], int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT queue, state, n FROM offload_counts WHERE n > 0")
        return {(q, JobState(s)): n for q, s, n in rows}
    finally:
        conn.close()
