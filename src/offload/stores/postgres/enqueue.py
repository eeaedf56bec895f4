"""The enqueue statement of the PostgreSQL store, and the backlog limits (``QueueCaps``)
kept around it for every producer of every process.

A batch without a backlog limit is one statement, as it always was: it takes no lock and
reads no count. A batch with one (a job whose task has ``max_queued`` or whose queue has
``queue_max``) runs in a transaction that first takes a transaction-level advisory lock per
capped task and capped queue, then inserts, then counts the backlogs, and rolls back with
``QueueFull`` when the call took one past its limit. The count comes after the lock, in a
statement of its own, so by a snapshot that holds every capped enqueue committed before
this one took its turn; and after the insert, so that a job whose key is on record (the
insert skipped it) is not counted, without a look of its own. The lock lasts until the
transaction ends: on the application's connection (``enqueue_in``) until it commits, since
until then its jobs are in no other producer's count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import TupleRow

from offload.errors import QueueFull
from offload.records import JobRecord
from offload.stores._common import queued_record
from offload.stores.base import NewJob
from offload.stores.postgres import flow, steps
from offload.stores.postgres.rows import enqueue_params, one_params, record

__all__ = ["RETRY_AFTER", "capped", "depths", "send", "send_capped", "send_steps"]

Conn = psycopg.AsyncConnection[TupleRow]

# Seconds a refused caller is told to wait when no rate says how fast the backlog drains.
RETRY_AFTER = 1.0


def capped(jobs: Sequence[NewJob]) -> bool:
    """Whether a batch holds a job with a backlog limit: only those pay for the lock."""
    return any(
        (lim := j.limits) is not None and (lim.max_queued is not None or lim.queue_max is not None)
        for j in jobs
    )


async def send(
    conn: Conn,
    q: dict[str, str],
    channel: str,
    jobs: list[NewJob],
    prepare: bool | None,
    inserted: set[str] | None = None,
) -> list[JobRecord]:
    """The enqueue statement on ``conn`` (pooled, or the application's own inside its
    transaction); the holders of keys already taken are read on the same connection.
    ``prepare``: ``None`` on a pooled connection (its ``prepare_threshold`` follows the
    URL's ``prepare``), ``False`` on the application's, where offload prepares nothing.
    ``inserted`` gathers the ids of the jobs written (not those a key found on record)."""
    # One job per key within the batch: the later ones get the first one's record.
    first: dict[tuple[str, str], int] = {}
    alias: dict[int, int] = {}
    unique: list[NewJob] = []
    for i, job in enumerate(jobs):
        if job.key is not None:
            held = first.setdefault((job.task, job.key), i)
            if held != i:
                alias[i] = held
                continue
        unique.append(job)
    limited = any(job.limits is not None for job in unique)
    workflow = steps.stepped(unique)
    if workflow:
        query = q["enqueue_steps"]
        params = enqueue_params(unique, channel) | flow.limit_params(unique)
        params |= steps.params(unique)
    elif len(unique) == 1 and not limited:
        query, params = q["enqueue_one"], one_params(unique[0], channel)
    elif limited:
        query = q["enqueue_limited"]
        params = enqueue_params(unique, channel) | flow.limit_params(unique)
    else:
        query, params = q["enqueue"], enqueue_params(unique, channel)
    cur = await conn.execute(query, params, prepare=prepare)
    written = {row[0]: row[1] for row in await cur.fetchall()}
    if inserted is not None:
        inserted.update(written)
    records: dict[int, JobRecord] = {}
    missing: list[int] = []
    now = next(iter(written.values()), 0.0)
    for i, job in enumerate(jobs):
        if i in alias:
            continue
        if job.id in written:
            records[i] = queued_record(job, now)
        else:
            missing.append(i)
    if missing:
        keyed = [jobs[i] for i in missing if jobs[i].key is not None]
        cur = await conn.execute(
            q["jobs_by_key"],
            {"tasks": [j.task for j in keyed], "keys": [j.key for j in keyed]},
            prepare=prepare,
        )
        holders = {(r.task, r.key): r for r in map(record, await cur.fetchall())}
        for i in missing:
            job = jobs[i]
            found = holders.get((job.task, job.key or ""))
            if found is None:
                # A key freed (purged or deleted) between the two statements, or no key
                # at all: take it again, as a fresh enqueue of this one job.
                [found] = await send(conn, q, channel, [job], prepare, inserted)
            records[i] = found
    out = [records[alias.get(i, i)] for i in range(len(jobs))]
    if workflow:
        out, dropped = await steps.settle(conn, q, jobs, out, set(written), prepare)
        if inserted is not None:
            inserted.difference_update(dropped)
    return out


async def send_steps(
    conn: Conn,
    q: dict[str, str],
    channel: str,
    prefix: str,
    jobs: list[NewJob],
    prepare: bool | None,
) -> list[JobRecord]:
    """``send`` for a batch with workflow steps: in a transaction (a savepoint on the
    application's connection), since a workflow whose last step's key is on record drops
    the steps it wrote before anyone sees them."""
    if capped(jobs):
        return await send_capped(conn, q, channel, prefix, jobs, prepare)
    if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        # As in send_capped: begin the application's transaction (which it commits), so
        # that the block below is a savepoint in it rather than a commit of its own.
        await conn.execute(q["now"], prepare=prepare)
    async with conn.transaction():
        return await send(conn, q, channel, jobs, prepare)


def _lock_keys(jobs: Sequence[NewJob]) -> tuple[list[str], list[str], list[str]]:
    """The capped tasks, the capped queues, and the advisory lock keys that name them (a
    word of their own, apart from the rate and concurrency keys of flow control)."""
    limited = [(j, j.limits) for j in jobs if j.limits is not None]
    tasks = sorted({j.task for j, lim in limited if lim.max_queued is not None})
    queues = sorted({j.queue for j, lim in limited if lim.queue_max is not None})
    keys = [f"backlog task {t}" for t in tasks] + [f"backlog queue {q}" for q in queues]
    return tasks, queues, sorted(keys)


async def send_capped(
    conn: Conn,
    q: dict[str, str],
    channel: str,
    prefix: str,
    jobs: list[NewJob],
    prepare: bool | None,
) -> list[JobRecord]:
    """``send`` for a batch with backlog limits: the whole batch is written, or nothing of
    it and ``QueueFull`` raised. ``conn`` is a pooled connection in autocommit mode, or the
    application's in whatever state it handed it over."""
    tasks, queues, keys = _lock_keys(jobs)
    lock = {"prefix": prefix, "keys": keys}
    locked = False
    if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        # The application's connection between transactions: this statement begins the
        # transaction the application will commit (and the lock lasts until then); the
        # block below is a savepoint in it, which a refusal rolls back.
        await conn.execute(q["flow_lock"], lock, prepare=prepare)
        locked = True
    async with conn.transaction():
        if not locked:
            await conn.execute(q["flow_lock"], lock, prepare=prepare)
        inserted: set[str] = set()
        records = await send(conn, q, channel, jobs, prepare, inserted)
        params = {"tasks": tasks, "queues": queues}
        cur = await conn.execute(q["caps_queued"], params, prepare=prepare)
        queued = {str(k): int(n) for k, n in await cur.fetchall()}
        # Raised inside the block: the transaction (or savepoint) rolls back.
        _check(jobs, inserted, queued)
    return records


def _check(jobs: Sequence[NewJob], inserted: set[str], queued: dict[str, int]) -> None:
    """Raise ``QueueFull`` when the jobs just written took a task or a queue past its
    limit; ``queued`` are the backlogs counted with them."""
    adding: Counter[str] = Counter()
    in_queue: Counter[str] = Counter()
    caps: dict[str, tuple[int, float | None]] = {}
    for job in jobs:
        if job.id not in inserted:
            continue
        in_queue[job.queue] += 1
        lim = job.limits
        if lim is None:
            continue
        if lim.max_queued is not None:
            adding[f"task:{job.task}"] += 1
            caps[f"task:{job.task}"] = (lim.max_queued, lim.rate)
        if lim.queue_max is not None:
            adding[f"queue:{job.queue}"] += 1
            caps[f"queue:{job.queue}"] = (lim.queue_max, None)
    # Tasks first, then queues, in name order: the refusal names the first limit passed.
    for name in sorted(caps, key=lambda n: (not n.startswith("task:"), n)):
        most, rate = caps[name]
        kind, _, what = name.partition(":")
        # A task's count holds only its capped jobs, all of this call's among them; a
        # queue's holds every job of the queue, this call's uncapped ones too.
        before = queued.get(name, 0) - (adding[name] if kind == "task" else in_queue[what])
        if before + adding[name] > most:
            # With a rate limit, the backlog drains at that rate: ask to come back then.
            wait = (before + adding[name] - most) / rate if rate else RETRY_AFTER
            raise QueueFull(f"{kind} {what!r}", most, before, max(RETRY_AFTER, wait))


async def depths(
    conn: Conn, q: dict[str, str], tasks: Sequence[str], queues: Sequence[str]
) -> dict[str, int]:
    """``QueueCaps.queued_depths``: the backlogs as the limits count them."""
    params: dict[str, Any] = {"tasks": list(tasks), "queues": list(queues)}
    cur = await conn.execute(q["caps_queued"], params)
    counted = {str(k): int(n) for k, n in await cur.fetchall()}
    names = [f"task:{t}" for t in tasks] + [f"queue:{name}" for name in queues]
    return {name: counted.get(name, 0) for name in names}
