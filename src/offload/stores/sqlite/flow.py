"""Rate and concurrency limits in the SQLite store: weighed inside the claim's transaction,
on the writer thread, so that every worker of every process sees one count.

A claim takes its jobs as ever (one ``UPDATE ... RETURNING``); only when one of them has
limits does ``admit`` look further: a job whose group already runs its limit, or whose
bucket has no token, is put back (``hold``) before the transaction commits, so no other
reader ever sees it claimed, and it used no attempt. Jobs without limits pay one returned
column and nothing else.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence

from offload.errors import QueueFull
from offload.records import JobRecord, WaitingReason
from offload.stores._common import keeps_token
from offload.stores.base import LimitUsage, NewJob
from offload.stores.sqlite.queries import QUERIES as Q

__all__ = ["FAR", "admit", "check_caps", "depths", "release", "set_limits", "usage"]

# Where a job held for a slot waits: beyond any claim's "due by now", in the same index
# range as every job not yet due (its real due time is in held_run_at).
FAR = 1e15

_SET_LIMITS = Q["set_limits"]
_LIMITS_OF = Q["limits_of"]
_ADMITTED = Q["admitted"]
_RUNNING_IN_GROUP = Q["running_in_group"]
_BUCKET = Q["bucket"]
_SAVE_BUCKET = Q["save_bucket"]
_HOLD = Q["hold"]
_ANY_HELD = Q["any_held"]
_RELEASE_HELD = Q["release_held"]
_HELD_IN_GROUP = Q["held_in_group"]
_RATE_WAITING = Q["rate_waiting"]
_QUEUED_CAPPED = Q["queued_capped"]
_QUEUED_IN_QUEUE = Q["queued_in_queue"]
_KEY_ON_RECORD = Q["key_on_record"]
# Seconds a refused caller is told to wait when nothing says how fast the backlog drains.
RETRY_AFTER = 1.0


def set_limits(conn: sqlite3.Connection, jobs: Sequence[NewJob], skip: set[int]) -> None:
    """Write the limits of the jobs just inserted (``skip``: those a key found on record)."""
    rows = [
        (
            lim.rate_key,
            lim.rate,
            lim.burst,
            lim.concurrency_key,
            lim.concurrency,
            lim.max_queued,
            new.id,
        )
        for i, new in enumerate(jobs)
        if (lim := new.limits) is not None and i not in skip
    ]
    if rows:
        conn.executemany(_SET_LIMITS, rows)


def check_caps(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> None:
    """Raise ``QueueFull`` before anything is written when the call would take a task or a
    queue past its backlog limit; a job whose key is on record adds nothing and is not
    counted."""
    per_task: Counter[str] = Counter()
    per_queue: Counter[str] = Counter()
    task_cap: dict[str, tuple[int, float | None]] = {}
    queue_cap: dict[str, int] = {}
    for new in jobs:
        lim = new.limits
        if lim is None or (lim.max_queued is None and lim.queue_max is None):
            continue
        if new.key is not None and conn.execute(_KEY_ON_RECORD, (new.task, new.key)).fetchone():
            continue
        if lim.max_queued is not None:
            per_task[new.task] += 1
            task_cap[new.task] = (lim.max_queued, lim.rate)
        if lim.queue_max is not None:
            per_queue[new.queue] += 1
            queue_cap[new.queue] = lim.queue_max
    for task, adding in per_task.items():
        most, rate = task_cap[task]
        queued = conn.execute(_QUEUED_CAPPED, (task,)).fetchone()[0]
        if queued + adding > most:
            # With a rate limit, the backlog drains at that rate: ask to come back then.
            wait = (queued + adding - most) / rate if rate else RETRY_AFTER
            raise QueueFull(f"task {task!r}", most, queued, max(RETRY_AFTER, wait))
    for queue, adding in per_queue.items():
        most = queue_cap[queue]
        queued = conn.execute(_QUEUED_IN_QUEUE, (queue,)).fetchone()[0]
        if queued + adding > most:
            raise QueueFull(f"queue {queue!r}", most, queued, RETRY_AFTER)


def depths(conn: sqlite3.Connection, tasks: Sequence[str], queues: Sequence[str]) -> dict[str, int]:
    out = {f"task:{t}": conn.execute(_QUEUED_CAPPED, (t,)).fetchone()[0] for t in tasks}
    for q in queues:
        out[f"queue:{q}"] = int(conn.execute(_QUEUED_IN_QUEUE, (q,)).fetchone()[0])
    return out


def admit(conn: sqlite3.Connection, claimed: list[JobRecord], now: float) -> set[str]:
    """Weigh the limited jobs of a claim, in claim order; return the ids held back, which
    are already put back in the queue.

    A job held for a token takes it as it is held: the bucket goes below zero by one, and
    the job is due when that token will have come in. Claimed then (or a little later:
    ``keeps_token``), it starts without being weighed again. So the tokens a bucket makes
    are never lost to the gaps between claims, the jobs behind a bucket are each held once
    rather than weighed again at every claim, and the rate holds however seldom workers
    claim."""
    limits = {job.id: conn.execute(_LIMITS_OF, (job.id,)).fetchone() for job in claimed}
    in_claim = Counter(row[4] for row in limits.values() if row[4] is not None)
    running: dict[str, int] = {}
    buckets: dict[str, float] = {}
    held: set[str] = set()
    admitted: list[tuple[str]] = []
    for job in claimed:
        _, rate_key, rate, burst, conc_key, conc_limit, waiting = limits[job.id]
        if conc_key is not None:
            if conc_key not in running:
                # The claim's own rows are running already: count only the others.
                found = conn.execute(_RUNNING_IN_GROUP, (conc_key,)).fetchone()[0]
                running[conc_key] = found - in_claim[conc_key]
            if running[conc_key] >= conc_limit:
                conn.execute(_HOLD, (WaitingReason.CONCURRENCY.value, FAR, job.run_at, job.id))
                held.add(job.id)
                continue
        if rate_key is not None and not keeps_token(waiting, job.run_at, now, rate):
            if rate_key not in buckets:
                tokens, at = _bucket(conn, rate_key, burst, now)
                buckets[rate_key] = min(float(burst), tokens + (now - at) * rate)
            tokens = buckets[rate_key]
            buckets[rate_key] = tokens - 1.0
            if tokens < 1.0:
                due = now + (1.0 - tokens) / rate
                conn.execute(_HOLD, (WaitingReason.RATE_LIMIT.value, due, None, job.id))
                held.add(job.id)
                continue
        if waiting is not None:
            admitted.append((job.id,))
        if conc_key is not None:
            running[conc_key] += 1
    conn.executemany(_ADMITTED, admitted)
    for key, tokens in buckets.items():
        conn.execute(_SAVE_BUCKET, (key, tokens, now))
    return held


def _bucket(conn: sqlite3.Connection, key: str, burst: int, now: float) -> tuple[float, float]:
    row = conn.execute(_BUCKET, (key,)).fetchone()
    return (float(burst), now) if row is None else (float(row[0]), float(row[1]))


def release(conn: sqlite3.Connection) -> int:
    """After jobs stopped running: give the jobs held for a slot of a group that now has one
    free their due time back; returns how many. One indexed look when nothing is held
    (nearly always)."""
    if conn.execute(_ANY_HELD).fetchone() is None:
        return 0
    return conn.execute(_RELEASE_HELD).rowcount


def usage(conn: sqlite3.Connection, keys: Sequence[str], now: float) -> list[LimitUsage]:
    out = []
    for key in keys:
        running = conn.execute(_RUNNING_IN_GROUP, (key,)).fetchone()[0]
        held = conn.execute(_HELD_IN_GROUP, (key,)).fetchone()[0]
        row = conn.execute(_BUCKET, (key,)).fetchone()
        # Below zero: tokens promised to jobs held for them; none to take.
        tokens = None if row is None else max(0.0, float(row[0]))
        waiting = held + conn.execute(_RATE_WAITING, (key,)).fetchone()[0]
        out.append(LimitUsage(key, running=running, tokens=tokens, waiting=waiting))
    return out
