"""The SQLite store's own mechanics, beyond the conformance suite: multi-row inserts and the
checkpointer thread, on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from importlib import resources
from pathlib import Path

import pytest

from offload.errors import StoreUnavailable
from offload.ids import new_id
from offload.jobs import JobState
from offload.stores import sqlite_ops
from offload.stores.base import NewJob
from offload.stores.sqlite import SQLiteStore
from offload.stores.sqlite_writer import BACKSTOP_PAGES


def _new(key: str | None = None, queue: str = "default") -> NewJob:
    return NewJob(
        id=new_id(),
        task="t",
        queue=queue,
        args="[]",
        kwargs="{}",
        priority=0,
        max_attempts=1,
        key=key,
    )


async def test_batches_of_every_length_keep_their_order_and_keys(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.open()
    try:
        # Lengths around the chunk sizes, and a keyed job in the middle of a batch whose key is
        # taken: the batch keeps its order and the caller gets the existing job for it.
        first = await store.enqueue([_new(key="k")])
        batch = [_new() for _ in range(130)] + [_new(key="k")] + [_new() for _ in range(255)]
        records = await store.enqueue(batch)
        assert records[130].id == first[0].id
        assert [r.id for r in records[:130] + records[131:]] == [
            j.id for j in batch[:130] + batch[131:]
        ]
        claimed = await store.claim(None, 1000, "w", 30)
        assert [r.id for r in claimed] == [first[0].id] + [j.id for j in batch if j.key is None]
        for n in (1, 3, 127, 128, 129, 1000):
            await store.enqueue([_new(queue=f"q{n}") for _ in range(n)])
            assert len(await store.claim([f"q{n}"], 2000, "w", 30)) == n
    finally:
        await store.close()


def test_multi_row_insert_respects_a_low_bound_variable_limit(tmp_path: Path) -> None:
    # Builds of SQLite before 3.32 allow 999 bound variables; 128 rows of 12 would exceed it.
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.executescript(resources.files("offload.stores").joinpath("sqlite.sql").read_text())
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    jobs = [_new() for _ in range(300)]
    conn.execute("BEGIN")
    assert sqlite_ops.enqueue(conn, jobs, 1.0) == {}
    conn.execute("COMMIT")
    ids = [r[0] for r in conn.execute("SELECT id FROM offload_jobs ORDER BY id")]
    assert ids == sorted(j.id for j in jobs)


async def test_checkpoints_run_off_the_writer_and_stop_with_the_store(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    writer = store._writer
    assert writer is not None
    threads = [writer, writer.checkpointer]
    try:
        before = path.stat().st_size
        for _ in range(30):
            await store.enqueue([_new() for _ in range(1000)])
        # SQLite's own checkpoint waits for BACKSTOP_PAGES (far more than 30,000 small rows
        # fill), so the main file grows only if the checkpointer copied the log into it.
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size < BACKSTOP_PAGES * 4096
        for _ in range(200):
            if path.stat().st_size > before + 1_000_000:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > before + 1_000_000
    finally:
        await store.close()
    assert not [t for t in threads if t.is_alive()]


async def test_counts_do_not_wait_for_the_writer_thread(tmp_path: Path) -> None:
    """A count over every row is read beside the writer thread, not on it: a metrics scrape
    or ``offload info`` never holds up the process's enqueues, claims and completions."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.open()
    release = threading.Event()
    try:
        await store.enqueue([_new(queue="a") for _ in range(3)])
        # Occupy the writer thread until released, as a long transaction would.
        busy = store._run(lambda conn: release.wait(10), write=False)
        counts = await asyncio.wait_for(store.counts(), 5)
        assert {("a", JobState.QUEUED): 3} == counts
        assert not busy.done()
        release.set()
        assert await busy
    finally:
        release.set()
        await store.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.counts()
