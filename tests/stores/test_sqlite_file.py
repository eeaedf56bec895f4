"""The SQLite store's own mechanics, beyond the conformance suite: multi-row inserts, the
checkpointer thread and the running totals behind counts, on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from offload.errors import ConfigError, StoreUnavailable
from offload.jobs import JobError, JobState
from offload.stores.base import ClaimRequest, Outcome, OutcomeKind
from offload.stores.sqlite import SQLiteStore, ops, schema
from offload.stores.sqlite.writer import BACKSTOP_PAGES
from offload.testing.inputs import new_job
from tests.stores.sqlite_files import layout_version, recount


async def test_batches_of_every_length_keep_their_order_and_keys(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.open()
    try:
        # Lengths around the chunk sizes, and a keyed job in the middle of a batch whose key is
        # taken: the batch keeps its order and the caller gets the existing job for it.
        first = await store.enqueue([new_job(key="k")])
        batch = (
            [new_job() for _ in range(130)] + [new_job(key="k")] + [new_job() for _ in range(255)]
        )
        records = await store.enqueue(batch)
        assert records[130].id == first[0].id
        assert [r.id for r in records[:130] + records[131:]] == [
            j.id for j in batch[:130] + batch[131:]
        ]
        claimed = await store.claim(ClaimRequest("w", 30, limit=1000))
        assert [r.id for r in claimed] == [first[0].id] + [j.id for j in batch if j.key is None]
        for n in (1, 3, 127, 128, 129, 1000):
            await store.enqueue([new_job(queue=f"q{n}") for _ in range(n)])
            assert len(await store.claim(ClaimRequest("w", 30, 2000, [f"q{n}"]))) == n
    finally:
        await store.close()


def test_multi_row_insert_respects_a_low_bound_variable_limit(tmp_path: Path) -> None:
    # Builds of SQLite before 3.32 allow 999 bound variables; 128 rows of 12 would exceed it.
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    schema.migrate(conn)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    jobs = [new_job() for _ in range(300)]
    conn.execute("BEGIN")
    assert ops.enqueue(conn, jobs, 1.0) == {}
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
            await store.enqueue([new_job() for _ in range(1000)])
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
        await store.enqueue([new_job(queue="a") for _ in range(3)])
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


async def test_counts_follow_every_transition(tmp_path: Path) -> None:
    """Finished jobs are counted from running totals: after every kind of move into or out
    of a finished state, on the fast and the slow completion paths, from this process's
    claims and another's, the counts equal a count over every row."""
    path = tmp_path / "jobs.db"
    store, other = SQLiteStore(f"sqlite:///{path}"), SQLiteStore(f"sqlite:///{path}")
    await store.open()
    await other.open()

    async def check() -> None:
        assert recount(path) == await store.counts()

    def done(job_id: str, kind: OutcomeKind, worker: str = "w", attempt: int = 1) -> Outcome:
        error = None if kind is OutcomeKind.SUCCEEDED else JobError("E", "boom")
        return Outcome(job_id, worker, attempt, kind, result="null", error=error)

    try:
        await store.enqueue([new_job(queue=q) for q in "aab" * 6])
        await check()
        # A key already held makes no second job, and no second count.
        await store.enqueue([new_job(key="k", queue="b"), new_job(queue="b")])
        await store.enqueue([new_job(key="k", queue="b")])
        await check()
        # A batch of successes applied at once, from two queues.
        claimed = await store.claim(ClaimRequest("w", 30, limit=4))
        assert [True] * 4 == await store.complete(
            [done(j.id, OutcomeKind.SUCCEEDED) for j in claimed]
        )
        await check()
        # Claimed by one process, completed through another (its queue looked up).
        claimed = await store.claim(ClaimRequest("w", 30, 3, ["a"]))
        assert [True] * 3 == await other.complete(
            [done(j.id, OutcomeKind.SUCCEEDED) for j in claimed]
        )
        await check()
        # One success whose fence fails sends the batch down the one-by-one path.
        claimed = await store.claim(ClaimRequest("w", 30, limit=2))
        applied = await store.complete(
            [
                done(claimed[0].id, OutcomeKind.SUCCEEDED),
                done(claimed[1].id, OutcomeKind.SUCCEEDED, attempt=9),
            ]
        )
        assert [True, False] == applied
        await check()
        # Failed, cancelled, retried, requeued and released outcomes.
        claimed = await store.claim(ClaimRequest("w", 30, limit=5))
        await store.cancel(claimed[4].id)  # requested while running: its release cancels it
        kinds = [
            OutcomeKind.FAILED,
            OutcomeKind.CANCELLED,
            OutcomeKind.RETRY,
            OutcomeKind.REQUEUE,
            OutcomeKind.RELEASE,
        ]
        assert [True] * 5 == await store.complete(
            [done(j.id, kind) for j, kind in zip(claimed, kinds, strict=True)]
        )
        await check()
        # Lapsed leases: one job with no attempts left fails, the others go back.
        [last] = await store.enqueue([new_job(queue="c", max_attempts=1)])
        claimed = await store.claim(ClaimRequest("w", 0.01, limit=100))
        assert last.id in {j.id for j in claimed}
        await asyncio.sleep(0.05)
        assert len(claimed) == await store.requeue_expired()
        await check()
        # Cancelled while queued; retried by hand from failed and from cancelled.
        [queued] = await store.enqueue([new_job(queue="b")])
        await store.cancel(queued.id)
        await check()
        await store.retry(queued.id)
        await store.retry(last.id)
        await check()
        # Purged: every finished job goes, and with it its count.
        assert await store.purge(time.time() + 1) > 0
        await check()
        assert not {state for _, state in await store.counts() if state.finished}
    finally:
        await other.close()
        await store.close()


async def test_counts_of_a_file_made_before_the_totals(tmp_path: Path) -> None:
    """A file whose finished jobs were stored before the totals existed gets them from its
    rows when it is next opened."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        await store.enqueue([new_job(queue=q) for q in "aabbb"])
        claimed = await store.claim(ClaimRequest("w", 30, limit=4))
        await store.complete([Outcome(j.id, "w", 1, OutcomeKind.SUCCEEDED) for j in claimed])
    finally:
        await store.close()
    # As such a file was: no totals, and no layout version in its header.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE offload_counts")
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    again = SQLiteStore(f"sqlite:///{path}")
    await again.open()
    try:
        counts = await again.counts()
        assert recount(path) == counts
        assert 4 == sum(n for (_, state), n in counts.items() if state is JobState.SUCCEEDED)
    finally:
        await again.close()
    assert schema.SCHEMA_VERSION == layout_version(path)


async def test_a_new_file_records_its_layout_version(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    await store.close()
    assert schema.SCHEMA_VERSION == layout_version(path)


async def test_a_file_of_a_newer_layout_is_refused_and_left_alone(tmp_path: Path) -> None:
    """An older process must not write to a file whose layout it does not know: it would
    skip what the newer one keeps (such as the totals) and leave it wrong for both."""
    path = tmp_path / "jobs.db"
    newer = schema.SCHEMA_VERSION + 1
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    store = SQLiteStore(f"sqlite:///{path}")
    with pytest.raises(ConfigError, match=rf"layout version {newer}.*upgrade offload"):
        await store.open()
    assert before == path.read_bytes()
    assert not path.with_name(path.name + "-wal").exists()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.counts()


async def test_next_run_at_seeks_each_priority(tmp_path: Path) -> None:
    """The earliest due time is found per queue and priority through the claim index, also
    where it sits in a lower priority than the first, and past the priorities sought one by
    one (``SEEK_PRIORITIES``), where the rest are scanned."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        jobs = [new_job(queue="a", priority=p, delay=d) for p, d in ((5, 100), (0, 50), (-3, 10))]
        many = ops.SEEK_PRIORITIES + 6
        jobs += [new_job(queue="b", priority=p, delay=1000 + p) for p in range(many)]
        [a_first] = [j for j in await store.enqueue(jobs) if j.priority == -3]
        conn = sqlite3.connect(path)
        try:
            [(b_first,)] = conn.execute(
                "SELECT min(run_at) FROM offload_jobs WHERE queue='b'"
            ).fetchall()
        finally:
            conn.close()
        assert a_first.run_at == await store.next_run_at(["a"])
        assert b_first == await store.next_run_at(["b"])
        assert a_first.run_at == await store.next_run_at(None)
        assert await store.next_run_at(["c"]) is None
    finally:
        await store.close()
