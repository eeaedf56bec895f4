"""The embedded default store: one SQLite file in WAL mode (``sqlite:///offload.db``).

Every statement runs on one writer thread per process that owns the connection (all but the
counts, see ``counts``); each hop to it runs a whole batch of operations inside
one ``BEGIN IMMEDIATE`` transaction (group commit), so a burst of enqueues, claims and
completions pays one fsync. Several processes may share the file: SQLite's write lock
serialises them and ``PRAGMA data_version`` tells a waiting worker that another process
committed, which keeps cross-process wake-ups to a short poll of a shared-memory counter
rather than of the table.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from offload.errors import ConfigError, InvalidTransition, StoreUnavailable
from offload.records import JobRecord, JobState, Progress
from offload.stores._common import (
    check_activity,
    dump_progress,
    encode_cursor,
    id_bounds,
    not_deletable,
    poll_changes,
    queue_list,
    queued_record,
    tally_activity,
    upper_id,
    wait_then_claim,
)
from offload.stores.base import (
    Activity,
    ClaimRequest,
    JobFilter,
    LimitUsage,
    NewJob,
    Outcome,
    Page,
    ScheduleState,
    WorkerInfo,
    check_worker_ttl,
)
from offload.stores.cancels import CancelWatch
from offload.stores.sqlite import flow, ops, steps
from offload.stores.sqlite.queries import QUERIES as Q
from offload.stores.sqlite.writer import LOCK_WAIT_SECONDS, Op, Writer

T = TypeVar("T")
log = logging.getLogger("offload.store.sqlite")

# Cross-process wake-up poll: from 1 ms, doubling while idle, to at most this interval.
MAX_POLL_SECONDS = 0.005
# A live view needs no finer grain than this; each read is one PRAGMA on shared memory.
CHANGES_POLL_SECONDS = 0.2
# A worker in another process hears of a cancel within this; each look is one PRAGMA on
# shared memory, and the read of the worker's flagged jobs runs only when the file changed.
CANCEL_POLL_SECONDS = 0.25
# Claims remembered for the counts (``SQLiteStore._claimed``) at most.
CLAIMED_MAX = 100_000

_DATA_VERSION = Q["data_version"]
_SET_PROGRESS = Q["set_progress"]
_CANCEL_QUEUED = Q["cancel_queued"]
_CANCEL_RUNNING = Q["cancel_running"]
_CANCEL_FLAGGED = Q["cancel_flagged"]
_RETRY = Q["retry"]
_PURGE_COUNTS = Q["purge_counts"]
_PURGE_DELETE = Q["purge_delete"]
_DELETE = Q["delete"]
_ADVANCE_SCHEDULE = Q["advance_schedule"]
_PAUSE_SCHEDULE = Q["pause_schedule"]
_SCHEDULE_STATES = Q["schedule_states"]
_LIST_JOBS = Q["list_jobs"]
_LIST_STATES = Q["list_states"]
_LIST_TASKS = Q["list_tasks"]
_LIST_QUEUES = Q["list_queues"]
_LIST_BEFORE = Q["list_before"]
_LIST_FROM = Q["list_from"]
_LIST_KEY = Q["list_key"]
_LIST_KEY_TASKS = Q["list_key_tasks"]
_ACTIVITY = Q["activity"]
_RECORD_WORKER = Q["record_worker"]
_DROP_LAPSED_WORKERS = Q["drop_lapsed_workers"]
_FORGET_WORKER = Q["forget_worker"]
_LIVE_WORKERS = Q["live_workers"]


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
        # Read on the writer thread inside each transaction (enqueue reads it just before
        # handing over its batch); a test clock replaces it.
        self._clock: Callable[[], float] = clock or time.time
        path, options = parse_sqlite_url(url)
        self.path = path
        self.synchronous = options.get("synchronous", "full")
        self._writer: Writer | None = None
        self._watch: sqlite3.Connection | None = None
        self._seen_version = 0
        self._local = asyncio.Event()
        # Queue of each job claimed here and not yet completed, so the counts need no lookup
        # per completed job (see ``ops.tally``); bounded, and a job missing from it is
        # looked up instead.
        self._claimed: dict[str, str] = {}
        self._cancels = CancelWatch(self._flagged, self._data_version, CANCEL_POLL_SECONDS)

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
        error = writer.startup_error
        if isinstance(error, ConfigError):  # a file too new: no retry helps
            raise error
        # Only a lock held elsewhere passes; anything else (not a database, no permission, a
        # directory) stays until someone fixes it, so a worker must not wait for it.
        if isinstance(error, sqlite3.Error) and not _locked(error):
            raise ConfigError(
                f"cannot use SQLite file {self.path}: {error}; check that the path names an "
                "SQLite file (or a new one) this process may read and write, or point the "
                "URL at another file"
            ) from error
        if error is not None:
            raise StoreUnavailable(f"cannot open SQLite file {self.path}: {error}") from error
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
            raise _not_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        writer.ops.put(Op(fn, future, loop, write, durable))
        return future

    def _data_version(self) -> int:
        watch = self._watch
        if watch is None:
            return 0
        row = watch.execute(_DATA_VERSION).fetchone()
        return int(row[0])

    async def now(self) -> float:
        return self._clock()

    # --- writes ------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        jobs = list(jobs)
        now = self._clock()
        if any(new.step is not None for new in jobs):
            return await self._enqueue_workflows(jobs, now)
        taken = self._run(lambda conn: ops.enqueue(conn, jobs, now), durable=True)
        # Built here while the writer thread inserts (it releases the GIL while SQLite works).
        records = [queued_record(new, now) for new in jobs]
        for i, found in (await taken).items():
            records[i] = found
        self._local.set()
        return records

    async def _enqueue_workflows(self, jobs: list[NewJob], now: float) -> list[JobRecord]:
        """``Workflows``: the steps' rows with their jobs, in the same transaction; a
        workflow whose key is on record adds nothing."""

        def op(conn: sqlite3.Connection) -> list[JobRecord]:
            known = steps.known(conn, jobs)
            keep = [new for new in jobs if new.step is None or new.step.workflow not in known]
            taken = ops.enqueue(conn, keep, now)
            steps.store(conn, keep, set(taken))
            kept = iter(range(len(keep)))
            records = []
            for new in jobs:
                if new.step is not None and new.step.workflow in known:
                    found = ops.get(conn, known[new.step.workflow])
                    assert found is not None
                    records.append(found)
                    continue
                i = next(kept)
                records.append(taken[i] if i in taken else steps.queued(new, now))
            return records

        records = await self._run(op, durable=True)
        self._local.set()
        return records

    async def steps(self, workflow: str) -> builtins.list[JobRecord]:
        """``Workflows``: every job of the workflow, in the order stored."""
        return await self._run(lambda conn: steps.workflow(conn, workflow), write=False)

    async def claim(self, request: ClaimRequest) -> list[JobRecord]:
        self._local.clear()
        self._seen_version = self._data_version()
        qs = queue_list(request.queues)
        clock = self._clock
        limit, worker_id, ttl = request.limit, request.worker_id, request.ttl
        records = await self._run(lambda conn: ops.claim(conn, qs, limit, worker_id, ttl, clock()))
        claimed = self._claimed
        if len(claimed) > CLAIMED_MAX:  # claims that were never completed here
            claimed.clear()
        for record in records:
            claimed[record.id] = record.queue
        return records

    # No blocking claim here: wait, then claim (see Store.wait_claim).
    wait_claim = wait_then_claim

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        leases = list(leases)
        clock = self._clock
        return await self._run(lambda conn: ops.heartbeat(conn, leases, worker_id, ttl, clock()))

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        outcomes = list(outcomes)
        clock = self._clock
        claimed = self._claimed
        queues = [claimed.pop(o.id, None) for o in outcomes]
        released: list[int] = []

        def op(conn: sqlite3.Connection) -> list[bool]:
            now = clock()
            applied = ops.complete(conn, outcomes, now, queues, released)
            released.append(steps.after_outcomes(conn, outcomes, applied, now))
            return applied

        applied = await self._run(op)
        if any(released) or any(o.kind in ops.REQUEUED for o in outcomes):
            self._local.set()
        return applied

    async def queued_depths(self, tasks: Sequence[str], queues: Sequence[str]) -> dict[str, int]:
        """``QueueCaps``: the backlog of each capped task and each queue."""
        names, qs = list(tasks), list(queues)
        return await self._run(lambda conn: flow.depths(conn, names, qs), write=False)

    async def limit_usage(self, keys: Sequence[str]) -> list[LimitUsage]:
        """``FlowControl``: running jobs, tokens and waiting jobs of each key."""
        names = list(keys)
        clock = self._clock
        return await self._run(lambda conn: flow.usage(conn, names, clock()), write=False)

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        progress = dump_progress(Progress(fraction, message))

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(_SET_PROGRESS, (progress, job_id, worker_id, attempt))
            return cur.rowcount == 1

        return await self._run(op)

    async def requeue_expired(self) -> int:
        clock = self._clock

        def op(conn: sqlite3.Connection) -> int:
            now = clock()
            failed: list[str] = []
            count = ops.requeue_expired(conn, now, failed)
            steps.after_failures(conn, failed, now)
            return count

        count = await self._run(op)
        if count:
            self._local.set()
        return count

    async def cancel(self, job_id: str) -> JobRecord | None:
        def op(conn: sqlite3.Connection) -> JobRecord | None:
            now = self._clock()
            if steps.is_step(conn, job_id):
                steps.cancel(conn, job_id, now)
                return ops.get(conn, job_id)
            cancelled = conn.execute(_CANCEL_QUEUED, (now, job_id)).fetchall()
            for (queue,) in cancelled:
                ops.tally_move(conn, queue, "queued", "cancelled")
            conn.execute(_CANCEL_RUNNING, (job_id,))
            return ops.get(conn, job_id)

        job = await self._run(op, durable=True)
        self._cancels.poke()
        return job

    async def cancel_requests(self, worker_id: str, timeout: float) -> set[str]:
        """``CancelSignals``. SQLite cannot tell another process that a row changed, so a
        worker looks: a ``cancel`` in its own process wakes it at once, and one of another
        process moves the file's ``data_version``, which the worker compares every
        ``CANCEL_POLL_SECONDS`` (a read of shared memory, no I/O) and only then reads its
        flagged jobs. One cheap look per worker, not a query per job or per tick."""
        if self._watch is None:
            raise _not_open()
        return await self._cancels.requests(worker_id, timeout)

    async def _flagged(self, worker_id: str) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            return {str(r[0]) for r in conn.execute(_CANCEL_FLAGGED, (worker_id,))}

        return await self._run(op, write=False)

    async def retry(self, job_id: str) -> JobRecord | None:
        def op(conn: sqlite3.Connection) -> JobRecord | None:
            job = ops.get(conn, job_id)
            if job is None:
                return None
            if job.state not in (JobState.FAILED, JobState.CANCELLED):
                raise InvalidTransition(
                    f"job {job_id} is {job.state.value}; "
                    "only failed or cancelled jobs can be retried"
                )
            if steps.is_step(conn, job_id):
                steps.resume(conn, job_id, self._clock())
                return ops.get(conn, job_id)
            conn.execute(_RETRY, (self._clock(), job_id))
            ops.tally_move(conn, job.queue, job.state.value, "queued")
            return ops.get(conn, job_id)

        record = await self._run(op, durable=True)
        self._local.set()
        return record

    async def delete(self, job_id: str) -> JobRecord | None:
        def op(conn: sqlite3.Connection) -> JobRecord | None:
            job = ops.get(conn, job_id)
            if job is None:
                return None
            if not job.state.finished:
                raise InvalidTransition(not_deletable(job_id, job.state))
            conn.execute(_DELETE, (job_id,))
            ops.tally(conn, {(job.queue, job.state.value): -1})
            return job

        # By hand, like cancel and retry: a deleted job must not come back after a power cut.
        return await self._run(op, durable=True)

    async def purge(self, older_than: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            gone = conn.execute(_PURGE_COUNTS, (older_than,)).fetchall()
            cur = conn.execute(_PURGE_DELETE, (older_than,))
            ops.tally(conn, {(queue, state): -n for queue, state, n in gone})
            return cur.rowcount

        return await self._run(op)

    async def advance_schedules(self, marks: dict[str, float]) -> None:
        rows = list(marks.items())

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_ADVANCE_SCHEDULE, rows)

        await self._run(op)

    async def pause_schedules(self, names: Sequence[str], paused: bool) -> None:
        rows = [(name, int(paused)) for name in names]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_PAUSE_SCHEDULE, rows)

        # An operator's pause must survive a power cut like any other change made by hand.
        await self._run(op, durable=True)

    # --- reads -------------------------------------------------------------------------

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        wanted = list(names)

        def op(conn: sqlite3.Connection) -> dict[str, ScheduleState]:
            if not wanted:
                return {}
            # One ? per name, composed here.
            sql = _SCHEDULE_STATES.format(marks=",".join("?" * len(wanted)))
            rows = conn.execute(sql, wanted).fetchall()
            return {n: ScheduleState(n, bool(p), f) for n, p, f in rows}

        return await self._run(op, write=False)

    async def get(self, job_id: str) -> JobRecord | None:
        return await self._run(lambda conn: ops.get(conn, job_id), write=False)

    async def activity(self, since: float, bucket: float) -> list[Activity]:
        check_activity(since, bucket)

        def op(conn: sqlite3.Connection) -> list[Activity]:
            rows = conn.execute(_ACTIVITY, (bucket, since)).fetchall()
            return tally_activity(rows, bucket)

        return await self._run(op, write=False)

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        below = upper_id(filter, cursor)
        low = id_bounds(filter)[0]

        def op(conn: sqlite3.Connection) -> Page:
            where: list[str] = []
            params: list[Any] = []
            # The WHERE clause is composed here from the list_* fragments the filter asks
            # for, each with one ? per value. A key with tasks is one seek per task, so the
            # task condition goes with it rather than on its own.
            tasks = list(filter.tasks)
            if filter.key is not None:
                if tasks:
                    where.append(_LIST_KEY_TASKS.format(marks=",".join("?" * len(tasks))))
                    params.extend(tasks)
                else:
                    where.append(_LIST_KEY)
                params.append(filter.key)
                tasks = []
            for fragment, values in (
                (_LIST_STATES, [s.value for s in filter.states]),
                (_LIST_TASKS, tasks),
                (_LIST_QUEUES, list(filter.queues)),
            ):
                if values:
                    where.append(fragment.format(marks=",".join("?" * len(values))))
                    params.extend(values)
            # Time bounds are id bounds (see JobFilter): a range of the primary key.
            if below is not None:
                where.append(_LIST_BEFORE)
                params.append(below)
            if low is not None:
                where.append(_LIST_FROM)
                params.append(low)
            sql = _LIST_JOBS.format(where="WHERE " + " AND ".join(where) if where else "")
            params.append(limit + 1)
            rows = conn.execute(sql, params).fetchall()
            jobs = [ops.read_record(r) for r in rows[:limit]]
            more = len(rows) > limit
            return Page(jobs, encode_cursor(jobs[-1].id) if more and jobs else None)

        return await self._run(op, write=False)

    async def counts(self) -> dict[tuple[str, JobState], int]:
        """Counts by queue and state, read on a connection of its own in a worker thread.

        They are running totals that every write keeps (``ops.tally``): one row per
        queue and state, whatever the number of jobs. The read stays off the writer thread
        all the same (WAL lets a reader run beside it), so that a scrape never waits for a
        batch in progress."""
        if self._writer is None:
            raise _not_open()
        path = self.path

        def read() -> dict[tuple[str, JobState], int]:
            try:
                conn = sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS)
                try:
                    rows = conn.execute(ops.COUNTS).fetchall()
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite error on {path}: {exc}") from exc
            return {(q, ops.STATES[s]): n for q, s, n in rows}

        return await asyncio.to_thread(read)

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        qs = queue_list(queues)
        return await self._run(lambda conn: ops.next_run_at(conn, qs), write=False)

    async def changes(self, since: str | None, timeout: float) -> str:
        """``ChangeFeed``: the file's ``data_version`` as seen by the watch connection, which
        moves on every commit of any other connection, this process's writer included."""
        if self._watch is None:
            raise _not_open()

        async def read() -> str:
            return str(self._data_version())

        return await poll_changes(read, since, timeout, CHANGES_POLL_SECONDS)

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

    # --- worker registry -----------------------------------------------------------------
    # Rows that say who is alive, not jobs: written without waiting for a full fsync (a row
    # lost to a power cut comes back with the worker's next heartbeat).

    async def record_worker(self, info: WorkerInfo, ttl: float) -> None:
        ttl = check_worker_ttl(ttl)
        queues = json.dumps(list(info.queues))

        def op(conn: sqlite3.Connection) -> None:
            now = self._clock()
            conn.execute(_DROP_LAPSED_WORKERS, (now,))
            conn.execute(
                _RECORD_WORKER,
                (
                    info.id,
                    info.host,
                    info.pid,
                    queues,
                    info.concurrency,
                    info.started_at,
                    info.running,
                    now,
                    now + ttl,
                ),
            )

        await self._run(op)

    async def forget_worker(self, worker_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_FORGET_WORKER, (worker_id,))

        await self._run(op)

    async def workers(self) -> builtins.list[WorkerInfo]:
        def op(conn: sqlite3.Connection) -> list[WorkerInfo]:
            rows = conn.execute(_LIVE_WORKERS, (self._clock(),)).fetchall()
            return [
                WorkerInfo(i, h, p, tuple(json.loads(q)), c, float(st), r, float(seen))
                for i, h, p, q, c, st, r, seen in rows
            ]

        return await self._run(op, write=False)


def _not_open() -> StoreUnavailable:
    return StoreUnavailable("the SQLite store is not open: use `async with jobs:` or jobs.lifespan")


def _locked(error: sqlite3.Error) -> bool:
    """Whether ``error`` is another connection holding the file, which passes on its own."""
    message = str(error).lower()
    return "locked" in message or "busy" in message
