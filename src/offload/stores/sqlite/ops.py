"""The SQLite store's operations: each runs on the writer thread, inside its transaction.

Kept apart from ``store`` (the store's async face) because these are plain functions of a
connection: what one hop to the writer thread does, statement by statement. The statements
are in ``queries.sql``, bound to constants here at import.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from typing import Any

from offload.records import JobRecord, JobState, WaitingReason
from offload.stores._common import (
    dump_error,
    history_entry,
    lease_expired_error,
    lease_requeued_error,
    load_error,
    load_history,
    load_progress,
    sort_key,
)
from offload.stores.base import NewJob, Outcome, OutcomeKind
from offload.stores.sqlite import flow
from offload.stores.sqlite.queries import QUERIES as Q

STATES = {s.value: s for s in JobState}

# Jobs per queue and state, kept as running totals in ``offload_counts`` (see
# ``migrations/0001_counts.sql`` for why): every statement that inserts a job, changes its
# state or deletes it adds its change there, in the same transaction, once per batch and
# queue (``tally``).
_TALLY = Q["tally"]

Tally = dict[tuple[str, str], int]


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


COUNTS = Q["counts"]


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
        # A claim's row stops before it: a claimed job's past is not the worker's concern.
        history=load_history(row[22]) if len(row) > 22 else [],
        waiting_reason=None if len(row) < 24 or row[23] is None else WaitingReason(row[23]),
    )


def read_record(row: tuple[Any, ...]) -> JobRecord:
    """A whole row as the reads select it: a job held for a slot shows its due time, not
    the far one that keeps claims off it (flow.FAR)."""
    job = record(row)
    if row[24] is not None:
        job.run_at = row[24]
    return job


_ROW = Q["job_row"]
_PARAMS = _ROW.count("?")
_INSERT_KEYED = Q["insert_keyed"]
# Rows per multi-row INSERT. One statement of many rows binds and steps once instead of once a
# row, which is most of what an insert costs from Python; statements are cached per size, and
# sizes are powers of two so a batch of any length needs at most eight of them. Builds of
# SQLite before 3.32 allow only 999 bound variables, hence the cap from the connection.
_CHUNK = 128
# Composed here, once: ``insert_jobs`` with ``job_row`` repeated n times.
_MULTI = {
    n: Q["insert_jobs"].format(rows=", ".join([_ROW] * n))
    for n in (1 << i for i in range(_CHUNK.bit_length()))
}
_JOB_BY_KEY = Q["job_by_key"]
_ADD_QUEUE = Q["add_queue"]


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
    limited = any(new.limits is not None for new in jobs)
    if limited:
        flow.check_caps(conn, jobs)
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
            found = conn.execute(_JOB_BY_KEY, (new.task, new.key)).fetchone()
            existing[i] = read_record(found)
        else:
            _count(changes, new.queue, "queued")
    if flat:
        _insert_rows(conn, flat)
    if limited:
        flow.set_limits(conn, jobs, set(existing))
    tally(conn, changes)
    queues = {new.queue for new in jobs}
    conn.executemany(_ADD_QUEUE, [(q,) for q in queues])
    return existing


# A claim returns only the columns it did not set itself (see ``claim`` in queries.sql).
_CLAIM_SET = Q["claim"]
_CLAIM_ONE = _CLAIM_SET.format(select=Q["claim_pick_one"])
_CLAIM_PART = Q["claim_pick_part"]
_CLAIM_MERGED = Q["claim_pick_merged"]
_QUEUES = Q["queues"]


def _claimed(row: tuple[Any, ...], lease_until: float, worker_id: str, now: float) -> JobRecord:
    """A claimed job's record: the columns ``claim`` returns, with the ones the claim
    set put back in their places in ``COLUMNS`` (state after kwargs; started_at, then
    lease_until and worker_id around finished_at; cancel_requested last)."""
    return record(
        (*row[:5], "running", *row[5:11], now, row[11], lease_until, worker_id, *row[12:], 0)
    )


def claim(
    conn: sqlite3.Connection,
    queues: list[str] | None,
    limit: int,
    worker_id: str,
    ttl: float,
    now: float,
) -> list[JobRecord]:
    if queues is None:
        queues = [row[0] for row in conn.execute(_QUEUES)]
        if not queues:
            return []
    records = _claim(conn, queues, limit, worker_id, ttl, now)
    if records:
        changes: Tally = {}
        for queue, n in Counter(r.queue for r in records).items():
            _move(changes, queue, "queued", "running", n)
        tally(conn, changes)
    records.sort(key=sort_key)
    return records


def _claim(
    conn: sqlite3.Connection,
    queues: list[str],
    limit: int,
    worker_id: str,
    ttl: float,
    now: float,
) -> list[JobRecord]:
    """Take up to ``limit`` due jobs. Jobs a limit holds back leave the due range as they
    are put back (``flow.admit``), so the claim goes on for the places they left, until it
    has ``limit`` or nothing due is left."""
    lease_until = now + ttl
    taken: list[JobRecord] = []
    while len(taken) < limit:
        want = limit - len(taken)
        params: list[Any] = [lease_until, worker_id, now]
        if len(queues) == 1:
            sql = _CLAIM_ONE
            params += [queues[0], now, want]
        else:
            # One index range per queue, merged (claim_pick_merged): composed here, since
            # the number of parts is the number of queues.
            for q in queues:
                params += [q, now, want]
            parts = " UNION ALL ".join([_CLAIM_PART] * len(queues))
            sql = _CLAIM_SET.format(select=_CLAIM_MERGED.format(parts=parts))
            params.append(want)
        rows = conn.execute(sql, params).fetchall()
        records = [_claimed(r[:-1], lease_until, worker_id, now) for r in rows]
        limited = [job for job, r in zip(records, rows, strict=True) if r[-1] is not None]
        if not limited:
            taken += records
            break
        limited.sort(key=sort_key)
        held = flow.admit(conn, limited, now)
        taken += [job for job in records if job.id not in held]
        if not held or len(rows) < want:
            break
    return taken


_HEARTBEAT = Q["heartbeat"]


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
        row = conn.execute(_HEARTBEAT, (lease_until, job_id, worker_id, attempt)).fetchone()
        if row is None:
            lost.add(job_id)
        elif row[0]:
            cancel.add(job_id)
    return lost, cancel


REQUEUED = (OutcomeKind.RETRY, OutcomeKind.REQUEUE, OutcomeKind.RELEASE)


# Each outcome's statement holds only under the caller's lease (same worker, same attempt),
# and returns the job's queue and new state for the totals.
_SUCCEEDED_MANY = Q["succeeded_many"]
_SUCCEEDED = Q["succeeded"]
_FINISHED = Q["finished"]
_APPEND = Q["append_history"]
_FAILED = Q["failed"].format(history=_APPEND)
_RELEASED = Q["released"]
_RETRIED = Q["retried"].format(history=_APPEND)
_RETRIED_BARE = Q["retried"].format(history="history")
_REQUEUED = Q["requeued"]


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
    if conn.executemany(_SUCCEEDED_MANY, rows).rowcount == len(rows):
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
    released: list[int] | None = None,
) -> list[bool]:
    """Apply ``outcomes``; ``queues`` holds each one's queue where the caller knows it (from
    its claim), for the finished counts; the others are looked up. ``released`` gets how
    many jobs held for a slot became claimable again."""
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
            cur = conn.execute(_SUCCEEDED, (o.result, now, *fence))
        elif kind is OutcomeKind.FAILED and o.error is not None:
            entry = history_entry(o.error, o.attempt)
            cur = conn.execute(_FAILED, (dump_error(o.error), entry, now, *fence))
        elif kind is OutcomeKind.FAILED or kind is OutcomeKind.CANCELLED:
            cur = conn.execute(_FINISHED, (kind.value, dump_error(o.error), now, *fence))
        elif kind is OutcomeKind.RELEASE:
            cur = conn.execute(_RELEASED, (now, now, *fence))
        elif kind is OutcomeKind.RETRY and o.error is not None:
            entry = history_entry(o.error, o.attempt)
            cur = conn.execute(_RETRIED, (dump_error(o.error), entry, now + o.delay, *fence))
        elif kind is OutcomeKind.RETRY:
            cur = conn.execute(_RETRIED_BARE, (None, now + o.delay, *fence))
        else:
            cur = conn.execute(_REQUEUED, (now, *fence))
        rows = cur.fetchall()
        for queue, state in rows:
            _move(changes, queue, "running", state)
        applied.append(len(rows) == 1)
    tally(conn, changes)
    freed = flow.release(conn)
    if released is not None:
        released.append(freed)
    return applied


# Rows per lookup of unknown queues; below the lowest bound-variable limit (999).
_LOOKUP = 500
_QUEUES_OF = Q["queues_of"]


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
    for start in range(0, len(unknown), _LOOKUP):
        ids = unknown[start : start + _LOOKUP]
        # One ? per id, composed here.
        for queue, n in conn.execute(_QUEUES_OF.format(marks=",".join("?" * len(ids))), ids):
            _move(changes, queue, "running", "succeeded", n)


_EXPIRED = Q["expired"]
_EXPIRED_FAIL = Q["expired_fail"].format(history=_APPEND)
_EXPIRED_REQUEUE = Q["expired_requeue"].format(history=_APPEND)


def requeue_expired(conn: sqlite3.Connection, now: float, failed: list[str] | None = None) -> int:
    """Requeue or fail the jobs whose lease lapsed; ``failed`` gets the ids that failed."""
    rows = conn.execute(_EXPIRED, (now,)).fetchall()
    changes: Tally = {}
    for job_id, attempt, max_attempts, worker_id, queue in rows:
        if attempt >= max_attempts:
            error = lease_expired_error(worker_id)
            entry = history_entry(error, attempt)
            cur = conn.execute(_EXPIRED_FAIL, (dump_error(error), entry, now, job_id, attempt))
            _move(changes, queue, "running", "failed", cur.rowcount)
            if failed is not None and cur.rowcount:
                failed.append(job_id)
        else:
            error = lease_requeued_error(worker_id)
            entry = history_entry(error, attempt)
            cur = conn.execute(_EXPIRED_REQUEUE, (now, dump_error(error), entry, job_id, attempt))
            _move(changes, queue, "running", "queued", cur.rowcount)
    tally(conn, changes)
    if rows:
        flow.release(conn)
    return len(rows)


# Distinct priorities of one queue looked at one index seek each in ``next_run_at``; a queue
# with more is finished with one scan of the rest.
SEEK_PRIORITIES = 64
_NEXT_TOP = Q["next_top"]
_NEXT_BELOW = Q["next_below"]
_NEXT_REST = Q["next_rest"]


def next_run_at(conn: sqlite3.Connection, queues: list[str] | None) -> float | None:
    """When the earliest queued job of ``queues`` (every queue: ``None``) is due.

    An idle worker asks on every wake-up that found nothing due. ``min(run_at)`` over the
    queued rows reads every one of them (370 ms at a million jobs scheduled ahead, on the
    writer thread that the process's enqueues and completions wait for); the claim index is
    ordered by queue, then priority, then run_at, so the first entry of each (queue,
    priority) is that group's earliest, found by one seek."""
    names = [row[0] for row in conn.execute(_QUEUES)] if queues is None else queues
    best: float | None = None
    for queue in names:
        below: int | None = None
        for _ in range(SEEK_PRIORITIES):
            row = (
                conn.execute(_NEXT_TOP, (queue,))
                if below is None
                else conn.execute(_NEXT_BELOW, (queue, below))
            ).fetchone()
            if row is None:
                break
            below, run_at = row
            if best is None or run_at < best:
                best = run_at
        else:
            row = conn.execute(_NEXT_REST, (queue, below)).fetchone()
            if row[0] is not None and (best is None or row[0] < best):
                best = row[0]
    return None if best is None else float(best)


_JOB_BY_ID = Q["job_by_id"]


def get(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(_JOB_BY_ID, (job_id,)).fetchone()
    return None if row is None else read_record(row)
