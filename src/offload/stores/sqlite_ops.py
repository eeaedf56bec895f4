"""The SQLite store's operations: each runs on the writer thread, inside its transaction.

Kept apart from ``sqlite.py`` (the store's async face) because these are plain functions of a
connection: what one hop to the writer thread does, statement by statement.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from typing import Any

from offload.errors import ConfigError
from offload.records import JobRecord, JobState
from offload.stores._common import (
    dump_error,
    lease_expired_error,
    lease_requeued_error,
    load_error,
    load_progress,
    sort_key,
)
from offload.stores.base import NewJob, Outcome, OutcomeKind

COLUMNS = (
    "id, task, queue, args, kwargs, state, priority, attempt, max_attempts, run_at, "
    "enqueued_at, timeout, started_at, finished_at, lease_until, worker_id, key, result, "
    "error, progress, meta, cancel_requested"
)

STATES = {s.value: s for s in JobState}

# Jobs per queue and state, kept as running totals in ``offload_counts``: finished rows stay
# for the retention period (millions of them) and a backlog may hold millions more, and
# counting them on every metrics scrape or ``offload info`` cost about 0.5-0.8 µs a row.
# Every statement that inserts a job, changes its state or deletes it adds its change here,
# in the same transaction, once per batch and queue (``tally``).

_COUNTS_TABLE = """
CREATE TABLE offload_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID"""

_TALLY = (
    "INSERT INTO offload_counts (queue, state, n) VALUES (?, ?, ?) "
    "ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n"
)

Tally = dict[tuple[str, str], int]


# The file's layout, in SQLite's ``user_version`` header field. 0 is a file from before the
# field was kept (with or without ``offload_counts``); 1 adds the totals. A process refuses a
# file of a higher version than its own: an older process would write rows without keeping
# what the newer layout keeps (its totals, say), and nothing would tell either of them.
SCHEMA_VERSION = 1


def check_version(conn: sqlite3.Connection) -> int:
    """The file's layout version; raises ``ConfigError`` if it is newer than this code's."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"this SQLite file has layout version {version}, written by a newer offload than "
            f"this one (which knows up to {SCHEMA_VERSION}); upgrade offload in every process "
            "that uses the file, or point this one at another file"
        )
    return version


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a file made by an older offload up to ``SCHEMA_VERSION``, once per file.

    Under the write lock, so that two processes opening the same old file do not both
    migrate it, and no write lands between a backfill and the first use of what it filled."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = check_version(conn)  # again: another process may have moved it meanwhile
        if version < 1:
            _add_counts(conn)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _add_counts(conn: sqlite3.Connection) -> None:
    """Version 1: ``offload_counts``, filled from the rows already there."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='offload_counts'"
    ).fetchone()
    if exists is None:
        conn.execute(_COUNTS_TABLE)
        conn.execute(
            "INSERT INTO offload_counts (queue, state, n) "
            "SELECT queue, state, count(*) FROM offload_jobs GROUP BY queue, state"
        )


def tally(conn: sqlite3.Connection, changes: Tally) -> None:
    rows = [(queue, state, n) for (queue, state), n in changes.items() if n]
    if rows:
        conn.executemany(_TALLY, rows)


def _count(changes: Tally, queue: str, state: str, n: int = 1) -> None:
    key = (queue, state)
    changes[key] = changes.get(key, 0) + n


def _move(changes: Tally, queue: str, old: str, new: str, n: int = 1) -> None:
    _count(changes, queue, old, -n)
    _count(changes, queue, new, n)


def tally_move(conn: sqlite3.Connection, queue: str, old: str, new: str) -> None:
    """``tally`` for one job that went from state ``old`` to ``new``."""
    changes: Tally = {}
    _move(changes, queue, old, new)
    tally(conn, changes)


COUNTS = "SELECT queue, state, n FROM offload_counts WHERE n > 0"


def record(row: tuple[Any, ...]) -> JobRecord:
    meta = row[20]
    return JobRecord(
        id=row[0],
        task=row[1],
        queue=row[2],
        args=row[3],
        kwargs=row[4],
        state=STATES[row[5]],
        priority=row[6],
        attempt=row[7],
        max_attempts=row[8],
        run_at=row[9],
        enqueued_at=row[10],
        timeout=row[11],
        started_at=row[12],
        finished_at=row[13],
        lease_until=row[14],
        worker_id=row[15],
        key=row[16],
        result=row[17],
        error=load_error(row[18]),
        progress=load_progress(row[19]),
        meta={} if meta == "{}" else json.loads(meta),
        cancel_requested=bool(row[21]),
    )


_COLS = (
    "INSERT INTO offload_jobs (id, task, queue, args, kwargs, state, priority, attempt, "
    "max_attempts, run_at, enqueued_at, timeout, key, meta) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?)"
_PARAMS = 12
_INSERT_KEYED = _COLS + _ROW + " ON CONFLICT (task, key) WHERE key IS NOT NULL DO NOTHING"
# Rows per multi-row INSERT. One statement of many rows binds and steps once instead of once a
# row, which is most of what an insert costs from Python; statements are cached per size, and
# sizes are powers of two so a batch of any length needs at most eight of them. Builds of
# SQLite before 3.32 allow only 999 bound variables, hence the cap from the connection.
_CHUNK = 128
_MULTI = {n: _COLS + ", ".join([_ROW] * n) for n in (1 << i for i in range(_CHUNK.bit_length()))}


def _insert_rows(conn: sqlite3.Connection, flat: list[Any]) -> None:
    rows = len(flat) // _PARAMS
    start = 0
    size = _CHUNK
    while size * _PARAMS > conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER):
        size >>= 1
    while rows:
        while size > rows:
            size >>= 1
        end = start + size * _PARAMS
        conn.execute(_MULTI[size], flat[start:end])
        start = end
        rows -= size


def enqueue(conn: sqlite3.Connection, jobs: list[NewJob], now: float) -> dict[int, JobRecord]:
    """Insert ``jobs``; returns the existing job for each index whose key was already taken.

    The caller builds the records of the inserted jobs itself (``queued_record`` with the same
    ``now``), off this thread, while the statements run.
    """
    existing: dict[int, JobRecord] = {}
    flat: list[Any] = []
    changes: Tally = {}
    for i, new in enumerate(jobs):
        row = (
            new.id,
            new.task,
            new.queue,
            new.args,
            new.kwargs,
            new.priority,
            new.max_attempts,
            new.run_at if new.run_at is not None else now + new.delay,
            now,
            new.timeout,
            new.key,
            json.dumps(new.meta) if new.meta else "{}",
        )
        if new.key is None:
            flat.extend(row)
            _count(changes, new.queue, "queued")
            continue
        # Flush earlier keyless rows first so that the batch keeps its order.
        if flat:
            _insert_rows(conn, flat)
            flat = []
        if conn.execute(_INSERT_KEYED, row).rowcount == 0:
            found = conn.execute(
                f"SELECT {COLUMNS} FROM offload_jobs WHERE task=? AND key=?", (new.task, new.key)
            ).fetchone()
            existing[i] = record(found)
        else:
            _count(changes, new.queue, "queued")
    if flat:
        _insert_rows(conn, flat)
    tally(conn, changes)
    queues = {new.queue for new in jobs}
    conn.executemany(
        "INSERT OR IGNORE INTO offload_queues (name) VALUES (?)", [(q,) for q in queues]
    )
    return existing


# A claim returns only the columns it did not set itself: each returned column costs about
# a third of a microsecond per job, on the writer's path that every worker takes turns on.
_CLAIMED = (
    "id, task, queue, args, kwargs, priority, attempt, max_attempts, run_at, enqueued_at, "
    "timeout, finished_at, key, result, error, progress, meta"
)
_CLAIM_SET = (
    "UPDATE offload_jobs SET state='running', attempt=attempt+1, lease_until=?, worker_id=?, "
    "started_at=?, cancel_requested=0 WHERE id IN ({select}) RETURNING " + _CLAIMED
)


def _claimed(row: tuple[Any, ...], lease_until: float, worker_id: str, now: float) -> JobRecord:
    """A claimed job's record: the columns returned (``_CLAIMED``), with the ones the claim
    set put back in their places in ``COLUMNS`` (state after kwargs; started_at, then
    lease_until and worker_id around finished_at; cancel_requested last)."""
    return record(
        (*row[:5], "running", *row[5:11], now, row[11], lease_until, worker_id, *row[12:], 0)
    )


_CLAIM_PICK = (
    "SELECT id FROM offload_jobs WHERE state='queued' {queue} AND run_at<=? "
    "ORDER BY priority DESC, run_at, id LIMIT ?"
)


def claim(
    conn: sqlite3.Connection,
    queues: list[str] | None,
    limit: int,
    worker_id: str,
    ttl: float,
    now: float,
) -> list[JobRecord]:
    lease_until = now + ttl
    params: list[Any] = [lease_until, worker_id, now]
    if queues is None:
        queues = [row[0] for row in conn.execute("SELECT name FROM offload_queues")]
        if not queues:
            return []
    if len(queues) == 1:
        select = _CLAIM_PICK.format(queue="AND queue=?")
        params += [queues[0], now, limit]
    else:
        # One index range per queue, merged: an IN list would make SQLite sort every due row.
        parts = []
        for q in queues:
            parts.append(
                "SELECT * FROM (SELECT id, priority, run_at FROM offload_jobs "
                "WHERE state='queued' AND queue=? AND run_at<=? "
                "ORDER BY priority DESC, run_at, id LIMIT ?)"
            )
            params += [q, now, limit]
        select = (
            "SELECT id FROM (" + " UNION ALL ".join(parts) + ") "
            "ORDER BY priority DESC, run_at, id LIMIT ?"
        )
        params.append(limit)
    rows = conn.execute(_CLAIM_SET.format(select=select), params).fetchall()
    records = [_claimed(r, lease_until, worker_id, now) for r in rows]
    if records:
        changes: Tally = {}
        for queue, n in Counter(r.queue for r in records).items():
            _move(changes, queue, "queued", "running", n)
        tally(conn, changes)
    records.sort(key=sort_key)
    return records


def heartbeat(
    conn: sqlite3.Connection,
    leases: list[tuple[str, int]],
    worker_id: str,
    ttl: float,
    now: float,
) -> tuple[set[str], set[str]]:
    lease_until = now + ttl
    lost: set[str] = set()
    cancel: set[str] = set()
    for job_id, attempt in leases:
        row = conn.execute(
            "UPDATE offload_jobs SET lease_until=? WHERE id=? AND state='running' "
            "AND worker_id=? AND attempt=? RETURNING cancel_requested",
            (lease_until, job_id, worker_id, attempt),
        ).fetchone()
        if row is None:
            lost.add(job_id)
        elif row[0]:
            cancel.add(job_id)
    return lost, cancel


_FENCE = " WHERE id=? AND state='running' AND worker_id=? AND attempt=?"


REQUEUED = (OutcomeKind.RETRY, OutcomeKind.REQUEUE, OutcomeKind.RELEASE)


_SUCCEEDED = (
    "UPDATE offload_jobs SET state='succeeded', result=?, error=NULL, finished_at=?, "
    "lease_until=NULL, cancel_requested=0" + _FENCE
)


def _all_succeeded(conn: sqlite3.Connection, outcomes: list[Outcome], now: float) -> bool:
    """Apply every success in one ``executemany``; ``False`` (and nothing applied) unless
    each one's fence held.

    Successes are nearly all of a busy worker's outcomes, and one statement call per job
    costs a cursor and a bind from Python each. When a fence fails (a lease was lost, which
    is rare), the statements are undone and the caller applies them one by one to learn
    which."""
    rows = [
        (o.result, now, o.id, o.worker_id, o.attempt)
        for o in outcomes
        if o.kind is OutcomeKind.SUCCEEDED
    ]
    if len(rows) < 2:
        return False
    conn.execute("SAVEPOINT successes")
    if conn.executemany(_SUCCEEDED, rows).rowcount == len(rows):
        conn.execute("RELEASE successes")
        return True
    conn.execute("ROLLBACK TO successes")
    conn.execute("RELEASE successes")
    return False


def complete(
    conn: sqlite3.Connection,
    outcomes: list[Outcome],
    now: float,
    queues: list[str | None],
) -> list[bool]:
    """Apply ``outcomes``; ``queues`` holds each one's queue where the caller knows it (from
    its claim), for the finished counts; the others are looked up."""
    applied: list[bool] = []
    changes: Tally = {}
    succeeded = _all_succeeded(conn, outcomes, now)
    if succeeded:
        _count_successes(conn, outcomes, queues, changes)
    for o in outcomes:
        fence = (o.id, o.worker_id, o.attempt)
        kind = o.kind
        if kind is OutcomeKind.SUCCEEDED:
            if succeeded:
                applied.append(True)
                continue
            cur = conn.execute(_SUCCEEDED + _RETURNING, (o.result, now, *fence))
        elif kind is OutcomeKind.FAILED or kind is OutcomeKind.CANCELLED:
            cur = conn.execute(
                "UPDATE offload_jobs SET state=?, error=?, finished_at=?, lease_until=NULL, "
                "cancel_requested=0" + _FENCE + _RETURNING,
                (kind.value, dump_error(o.error), now, *fence),
            )
        elif kind is OutcomeKind.RELEASE:
            cur = conn.execute(
                "UPDATE offload_jobs SET "
                "state=CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, "
                "finished_at=CASE WHEN cancel_requested THEN ? ELSE finished_at END, "
                "run_at=?, attempt=attempt-CASE WHEN cancel_requested THEN 0 ELSE 1 END, "
                "started_at=CASE WHEN attempt=1 AND NOT cancel_requested THEN NULL "
                "ELSE started_at END, "
                "worker_id=CASE WHEN attempt=1 AND NOT cancel_requested THEN NULL "
                "ELSE worker_id END, "
                "lease_until=NULL, cancel_requested=0" + _FENCE + _RETURNING,
                (now, now, *fence),
            )
        elif kind is OutcomeKind.RETRY:
            cur = conn.execute(
                "UPDATE offload_jobs SET state='queued', error=?, run_at=?, lease_until=NULL, "
                "cancel_requested=0" + _FENCE + _RETURNING,
                (dump_error(o.error), now + o.delay, *fence),
            )
        else:
            cur = conn.execute(
                "UPDATE offload_jobs SET state='queued', run_at=?, lease_until=NULL, "
                "max_attempts=max(max_attempts, attempt+1)" + _FENCE + _RETURNING,
                (now, *fence),
            )
        rows = cur.fetchall()
        for queue, state in rows:
            _move(changes, queue, "running", state)
        applied.append(len(rows) == 1)
    tally(conn, changes)
    return applied


_RETURNING = " RETURNING queue, state"


def _count_successes(
    conn: sqlite3.Connection, outcomes: list[Outcome], queues: list[str | None], changes: Tally
) -> None:
    """Add the successes of a batch applied at once to ``changes``, by queue."""
    succeeded = OutcomeKind.SUCCEEDED
    known = Counter(q for o, q in zip(outcomes, queues, strict=True) if o.kind is succeeded)
    for queue, n in known.items():
        if queue is not None:
            _move(changes, queue, "running", "succeeded", n)
    unknown = []
    if None in known:
        unknown = [
            o.id for o, q in zip(outcomes, queues, strict=True) if o.kind is succeeded and q is None
        ]
    for start in range(0, len(unknown), 500):
        ids = unknown[start : start + 500]
        for queue, n in conn.execute(
            f"SELECT queue, count(*) FROM offload_jobs WHERE id IN ({','.join('?' * len(ids))}) "
            "GROUP BY queue",
            ids,
        ):
            _move(changes, queue, "running", "succeeded", n)


def requeue_expired(conn: sqlite3.Connection, now: float) -> int:
    rows = conn.execute(
        "SELECT id, attempt, max_attempts, worker_id, queue FROM offload_jobs "
        "WHERE state='running' AND lease_until < ?",
        (now,),
    ).fetchall()
    changes: Tally = {}
    for job_id, attempt, max_attempts, worker_id, queue in rows:
        if attempt >= max_attempts:
            cur = conn.execute(
                "UPDATE offload_jobs SET state='failed', error=?, finished_at=?, "
                "lease_until=NULL WHERE id=? AND state='running' AND attempt=?",
                (dump_error(lease_expired_error(worker_id)), now, job_id, attempt),
            )
            _move(changes, queue, "running", "failed", cur.rowcount)
        else:
            cur = conn.execute(
                "UPDATE offload_jobs SET state='queued', run_at=?, lease_until=NULL, "
                "error=? WHERE id=? AND state='running' AND attempt=?",
                (
                    now,
                    dump_error(lease_requeued_error(worker_id)),
                    job_id,
                    attempt,
                ),
            )
            _move(changes, queue, "running", "queued", cur.rowcount)
    tally(conn, changes)
    return len(rows)


# Distinct priorities of one queue looked at one index seek each in ``next_run_at``; a queue
# with more is finished with one scan of the rest.
SEEK_PRIORITIES = 64


def next_run_at(conn: sqlite3.Connection, queues: list[str] | None) -> float | None:
    """When the earliest queued job of ``queues`` (every queue: ``None``) is due.

    An idle worker asks on every wake-up that found nothing due. ``min(run_at)`` over the
    queued rows reads every one of them (370 ms at a million jobs scheduled ahead, on the
    writer thread that the process's enqueues and completions wait for); the claim index is
    ordered by queue, then priority, then run_at, so the first entry of each (queue,
    priority) is that group's earliest, found by one seek."""
    names = (
        [row[0] for row in conn.execute("SELECT name FROM offload_queues")]
        if queues is None
        else queues
    )
    best: float | None = None
    for queue in names:
        below: int | None = None
        for _ in range(SEEK_PRIORITIES):
            row = conn.execute(
                "SELECT priority, run_at FROM offload_jobs WHERE state='queued' AND queue=? "
                + ("" if below is None else "AND priority<? ")
                + "ORDER BY priority DESC, run_at LIMIT 1",
                (queue,) if below is None else (queue, below),
            ).fetchone()
            if row is None:
                break
            below, run_at = row
            if best is None or run_at < best:
                best = run_at
        else:
            row = conn.execute(
                "SELECT min(run_at) FROM offload_jobs WHERE state='queued' AND queue=? "
                "AND priority<?",
                (queue, below),
            ).fetchone()
            if row[0] is not None and (best is None or row[0] < best):
                best = row[0]
    return None if best is None else float(best)


def get(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM offload_jobs WHERE id=?", (job_id,)).fetchone()
    return None if row is None else record(row)
