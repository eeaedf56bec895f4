"""The embedded default store: one SQLite file in WAL mode (``sqlite:///offload.db``).

Every statement runs on one writer thread per process that owns the connection; each hop to it
runs a whole batch of operations inside one ``BEGIN IMMEDIATE`` transaction (group commit), so
a burst of enqueues, claims and completions pays one fsync. Several processes may share the
file: SQLite's write lock serialises them and ``PRAGMA data_version`` tells a waiting worker
that another process committed, which keeps cross-process wake-ups to a short poll of a
shared-memory counter rather than of the table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from offload.errors import ConfigError, InvalidTransition, StoreUnavailable
from offload.jobs import JobRecord, JobState, Progress
from offload.stores._common import (
    decode_cursor,
    dump_error,
    dump_progress,
    encode_cursor,
    lease_expired_error,
    lease_requeued_error,
    load_error,
    load_progress,
    queue_list,
    queued_record,
    sort_key,
)
from offload.stores.base import JobFilter, NewJob, Outcome, OutcomeKind, Page, ScheduleState
from offload.stores.sqlite_writer import Op, Writer

T = TypeVar("T")
log = logging.getLogger("offload.store.sqlite")

# Cross-process wake-up poll: from 1 ms, doubling while idle, to at most this interval.
MAX_POLL_SECONDS = 0.005

COLUMNS = (
    "id, task, queue, args, kwargs, state, priority, attempt, max_attempts, run_at, "
    "enqueued_at, timeout, started_at, finished_at, lease_until, worker_id, key, result, "
    "error, progress, meta, cancel_requested"
)

_STATES = {s.value: s for s in JobState}


def _record(row: tuple[Any, ...]) -> JobRecord:
    meta = row[20]
    return JobRecord(
        id=row[0],
        task=row[1],
        queue=row[2],
        args=row[3],
        kwargs=row[4],
        state=_STATES[row[5]],
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


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``; options as query parameters."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise ConfigError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path == ":memory:":
        raise ConfigError(
            f"invalid SQLite URL {url!r}: a file path is required (workers share the file); "
            "use memory:// for an in-process store"
        )
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ConfigError(f"unknown SQLite URL option(s) {sorted(unknown)}; known: synchronous")
    sync = options.get("synchronous", "full").lower()
    if sync not in {"full", "normal", "extra"}:
        raise ConfigError(
            f"synchronous={sync!r} in {url!r}: choose full (default, durable), extra or normal"
        )
    return path, options


class SQLiteStore:
    """See the module docstring. ``synchronous=full`` (default) makes every accepted job
    durable across power loss; ``normal`` trades the last transactions for speed."""

    def __init__(self, url: str, clock: Callable[[], float] | None = None) -> None:
        self.url = url
        # Read on the writer thread, inside each transaction; a test clock replaces it.
        self._clock: Callable[[], float] = clock or time.time
        path, options = parse_sqlite_url(url)
        self.path = path
        self.synchronous = options.get("synchronous", "full")
        self._writer: Writer | None = None
        self._watch: sqlite3.Connection | None = None
        self._seen_version = 0
        self._local = asyncio.Event()

    # --- plumbing --------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        parent = Path(self.path).expanduser().absolute().parent  # noqa: ASYNC240 - once, at open
        if not parent.is_dir():
            raise ConfigError(
                f"cannot create {self.path}: directory {parent} does not exist; create it first"
            )
        writer = Writer(self.path, self.synchronous)
        writer.start()
        await asyncio.get_running_loop().run_in_executor(None, writer.ready.wait)
        if writer.startup_error is not None:
            raise StoreUnavailable(
                f"cannot open SQLite file {self.path}: {writer.startup_error}"
            ) from writer.startup_error
        self._writer = writer
        self._watch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._local = asyncio.Event()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.ops.put(None)
        await asyncio.get_running_loop().run_in_executor(None, writer.join)
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _run(
        self, fn: Callable[[sqlite3.Connection], T], write: bool = True, durable: bool = False
    ) -> asyncio.Future[T]:
        writer = self._writer
        if writer is None:
            raise StoreUnavailable(
                "the SQLite store is not open: use `async with jobs:` or jobs.lifespan"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        writer.ops.put(Op(fn, future, loop, write, durable))
        return future

    def _data_version(self) -> int:
        watch = self._watch
        if watch is None:
            return 0
        row = watch.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def now(self) -> float:
        return self._clock()

    # --- writes ------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        jobs = list(jobs)
        clock = self._clock
        records = await self._run(lambda conn: _enqueue(conn, jobs, clock()), durable=True)
        self._local.set()
        return records

    async def claim(
        self, queues: Sequence[str] | None, limit: int, worker_id: str, ttl: float
    ) -> list[JobRecord]:
        self._local.clear()
        self._seen_version = self._data_version()
        qs = queue_list(queues)
        clock = self._clock
        return await self._run(lambda conn: _claim(conn, qs, limit, worker_id, ttl, clock()))

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        leases = list(leases)
        clock = self._clock
        return await self._run(lambda conn: _heartbeat(conn, leases, worker_id, ttl, clock()))

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        outcomes = list(outcomes)
        clock = self._clock
        applied = await self._run(lambda conn: _complete(conn, outcomes, clock()))
        if any(o.kind in _REQUEUED for o in outcomes):
            self._local.set()
        return applied

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        progress = dump_progress(Progress(fraction, message))

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE offload_jobs SET progress=? WHERE id=? AND state='running' "
                "AND worker_id=? AND attempt=?",
                (progress, job_id, worker_id, attempt),
            )
            return cur.rowcount == 1

        return await self._run(op)

    async def requeue_expired(self) -> int:
        clock = self._clock
        count = await self._run(lambda conn: _requeue_expired(conn, clock()))
        if count:
            self._local.set()
        return count

    async def cancel(self, job_id: str) -> JobRecord | None:
        def op(conn: sqlite3.Connection) -> JobRecord | None:
            now = self._clock()
            conn.execute(
                "UPDATE offload_jobs SET state='cancelled', finished_at=? "
                "WHERE id=? AND state='queued'",
                (now, job_id),
            )
            conn.execute(
                "UPDATE offload_jobs SET cancel_requested=1 WHERE id=? AND state='running'",
                (job_id,),
            )
            return _get(conn, job_id)

        return await self._run(op, durable=True)

    async def retry(self, job_id: str) -> JobRecord | None:
        def op(conn: sqlite3.Connection) -> JobRecord | None:
            job = _get(conn, job_id)
            if job is None:
                return None
            if job.state not in (JobState.FAILED, JobState.CANCELLED):
                raise InvalidTransition(
                    f"job {job_id} is {job.state.value}; "
                    "only failed or cancelled jobs can be retried"
                )
            conn.execute(
                "UPDATE offload_jobs SET state='queued', attempt=0, run_at=?, finished_at=NULL, "
                "error=NULL, cancel_requested=0, lease_until=NULL WHERE id=?",
                (self._clock(), job_id),
            )
            return _get(conn, job_id)

        record = await self._run(op, durable=True)
        self._local.set()
        return record

    async def purge(self, older_than: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM offload_jobs WHERE finished_at IS NOT NULL AND finished_at < ? "
                "AND state IN ('succeeded', 'failed', 'cancelled')",
                (older_than,),
            )
            return cur.rowcount

        return await self._run(op)

    async def advance_schedules(self, marks: dict[str, float]) -> None:
        rows = list(marks.items())

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO offload_schedules (name, fired_until) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET fired_until = "
                "max(coalesce(fired_until, excluded.fired_until), excluded.fired_until)",
                rows,
            )

        await self._run(op)

    async def pause_schedules(self, names: Sequence[str], paused: bool) -> None:
        rows = [(name, int(paused)) for name in names]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO offload_schedules (name, paused) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
                rows,
            )

        # An operator's pause must survive a power cut like any other change made by hand.
        await self._run(op, durable=True)

    # --- reads -------------------------------------------------------------------------

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        wanted = list(names)

        def op(conn: sqlite3.Connection) -> dict[str, ScheduleState]:
            if not wanted:
                return {}
            rows = conn.execute(
                "SELECT name, paused, fired_until FROM offload_schedules "
                f"WHERE name IN ({','.join('?' * len(wanted))})",
                wanted,
            ).fetchall()
            return {n: ScheduleState(n, bool(p), f) for n, p, f in rows}

        return await self._run(op, write=False)

    async def get(self, job_id: str) -> JobRecord | None:
        return await self._run(lambda conn: _get(conn, job_id), write=False)

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        after = decode_cursor(cursor) if cursor else None

        def op(conn: sqlite3.Connection) -> Page:
            where: list[str] = []
            params: list[Any] = []
            for column, values in (
                ("state", [s.value for s in filter.states]),
                ("task", list(filter.tasks)),
                ("queue", list(filter.queues)),
            ):
                if values:
                    where.append(f"{column} IN ({','.join('?' * len(values))})")
                    params.extend(values)
            if after is not None:
                where.append("id < ?")
                params.append(after)
            sql = f"SELECT {COLUMNS} FROM offload_jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY id DESC LIMIT ?"
            params.append(limit + 1)
            rows = conn.execute(sql, params).fetchall()
            jobs = [_record(r) for r in rows[:limit]]
            more = len(rows) > limit
            return Page(jobs, encode_cursor(jobs[-1].id) if more and jobs else None)

        return await self._run(op, write=False)

    async def counts(self) -> dict[tuple[str, JobState], int]:
        def op(conn: sqlite3.Connection) -> dict[tuple[str, JobState], int]:
            rows = conn.execute(
                "SELECT queue, state, count(*) FROM offload_jobs GROUP BY queue, state"
            ).fetchall()
            return {(q, _STATES[s]): n for q, s, n in rows}

        return await self._run(op, write=False)

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        def op(conn: sqlite3.Connection) -> float | None:
            if queues is None:
                row = conn.execute(
                    "SELECT min(run_at) FROM offload_jobs WHERE state='queued'"
                ).fetchone()
            else:
                qs = list(queues)
                row = conn.execute(
                    "SELECT min(run_at) FROM offload_jobs WHERE state='queued' "
                    f"AND queue IN ({','.join('?' * len(qs))})",
                    qs,
                ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._run(op, write=False)

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = 0.001
        while True:
            if self._data_version() != self._seen_version:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._local.wait(), min(interval, remaining))
            except TimeoutError:
                interval = min(interval * 2, MAX_POLL_SECONDS)
            else:
                return


# --- operations, run on the writer thread ----------------------------------------------

_INSERT = (
    "INSERT INTO offload_jobs (id, task, queue, args, kwargs, state, priority, attempt, "
    "max_attempts, run_at, enqueued_at, timeout, key, meta) "
    "VALUES (?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?)"
)


def _enqueue(conn: sqlite3.Connection, jobs: list[NewJob], now: float) -> list[JobRecord]:
    records: list[JobRecord] = []
    plain: list[tuple[Any, ...]] = []
    for new in jobs:
        run_at = new.run_at if new.run_at is not None else now + new.delay
        meta = json.dumps(new.meta) if new.meta else "{}"
        row = (
            new.id,
            new.task,
            new.queue,
            new.args,
            new.kwargs,
            new.priority,
            new.max_attempts,
            run_at,
            now,
            new.timeout,
            new.key,
            meta,
        )
        if new.key is not None:
            # Flush earlier keyless rows first so that the batch keeps its order.
            if plain:
                conn.executemany(_INSERT, plain)
                plain = []
            cur = conn.execute(
                _INSERT + " ON CONFLICT (task, key) WHERE key IS NOT NULL DO NOTHING", row
            )
            if cur.rowcount == 0:
                existing = conn.execute(
                    f"SELECT {COLUMNS} FROM offload_jobs WHERE task=? AND key=?",
                    (new.task, new.key),
                ).fetchone()
                records.append(_record(existing))
                continue
        else:
            plain.append(row)
        records.append(queued_record(new, now))
    if plain:
        conn.executemany(_INSERT, plain)
    queues = {new.queue for new in jobs}
    conn.executemany(
        "INSERT OR IGNORE INTO offload_queues (name) VALUES (?)", [(q,) for q in queues]
    )
    return records


_CLAIM_SET = (
    "UPDATE offload_jobs SET state='running', attempt=attempt+1, lease_until=?, worker_id=?, "
    "started_at=?, cancel_requested=0 WHERE id IN ({select}) RETURNING " + COLUMNS
)
_CLAIM_PICK = (
    "SELECT id FROM offload_jobs WHERE state='queued' {queue} AND run_at<=? "
    "ORDER BY priority DESC, run_at, id LIMIT ?"
)


def _claim(
    conn: sqlite3.Connection,
    queues: list[str] | None,
    limit: int,
    worker_id: str,
    ttl: float,
    now: float,
) -> list[JobRecord]:
    params: list[Any] = [now + ttl, worker_id, now]
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
    records = [_record(r) for r in rows]
    records.sort(key=sort_key)
    return records


def _heartbeat(
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


_REQUEUED = (OutcomeKind.RETRY, OutcomeKind.REQUEUE, OutcomeKind.RELEASE)


def _complete(conn: sqlite3.Connection, outcomes: list[Outcome], now: float) -> list[bool]:
    applied: list[bool] = []
    for o in outcomes:
        fence = (o.id, o.worker_id, o.attempt)
        kind = o.kind
        if kind is OutcomeKind.SUCCEEDED:
            cur = conn.execute(
                "UPDATE offload_jobs SET state='succeeded', result=?, error=NULL, "
                "finished_at=?, lease_until=NULL, cancel_requested=0" + _FENCE,
                (o.result, now, *fence),
            )
        elif kind is OutcomeKind.FAILED or kind is OutcomeKind.CANCELLED:
            cur = conn.execute(
                "UPDATE offload_jobs SET state=?, error=?, finished_at=?, lease_until=NULL, "
                "cancel_requested=0" + _FENCE,
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
                "lease_until=NULL, cancel_requested=0" + _FENCE,
                (now, now, *fence),
            )
        elif kind is OutcomeKind.RETRY:
            cur = conn.execute(
                "UPDATE offload_jobs SET state='queued', error=?, run_at=?, lease_until=NULL, "
                "cancel_requested=0" + _FENCE,
                (dump_error(o.error), now + o.delay, *fence),
            )
        else:
            cur = conn.execute(
                "UPDATE offload_jobs SET state='queued', run_at=?, lease_until=NULL, "
                "max_attempts=max(max_attempts, attempt+1)" + _FENCE,
                (now, *fence),
            )
        applied.append(cur.rowcount == 1)
    return applied


def _requeue_expired(conn: sqlite3.Connection, now: float) -> int:
    rows = conn.execute(
        "SELECT id, attempt, max_attempts, worker_id FROM offload_jobs "
        "WHERE state='running' AND lease_until < ?",
        (now,),
    ).fetchall()
    for job_id, attempt, max_attempts, worker_id in rows:
        if attempt >= max_attempts:
            conn.execute(
                "UPDATE offload_jobs SET state='failed', error=?, finished_at=?, "
                "lease_until=NULL WHERE id=? AND state='running' AND attempt=?",
                (dump_error(lease_expired_error(worker_id)), now, job_id, attempt),
            )
        else:
            conn.execute(
                "UPDATE offload_jobs SET state='queued', run_at=?, lease_until=NULL, "
                "error=? WHERE id=? AND state='running' AND attempt=?",
                (
                    now,
                    dump_error(lease_requeued_error(worker_id)),
                    job_id,
                    attempt,
                ),
            )
    return len(rows)


def _get(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM offload_jobs WHERE id=?", (job_id,)).fetchone()
    return None if row is None else _record(row)
