"""The PostgreSQL store (``postgresql://user@host:5432/app``): jobs in a table of the
application's own database, queryable like any other (docs/postgresql.md).

Each transition is one statement (so one implicit transaction, one round trip): claims pick
due rows ``FOR UPDATE SKIP LOCKED`` in batches, so claimers never wait on each other;
completions and heartbeats apply a whole batch through ``unnest``; every change to a running
job holds only under its lease (same worker, same attempt). Leases and due times are on the
server's clock (``now()``). New work wakes idle workers by ``LISTEN/NOTIFY`` (listener.py).
An enqueue can run on a connection of the application's, inside its transaction
(``enqueue_in``): the job commits or rolls back with the application's own rows. A batch
with a backlog limit is counted and written under an advisory lock (``QueueCaps``). A
workflow's steps (``Workflows``) move on in the transaction of the outcome that moves them.

The SQL is in ``queries.sql``, ``steps.sql`` and ``migrations/`` beside this module (bound
to a schema, and its rows read, in ``rows.py``); the URL's options in ``options.py``; the
layout version and migrations in ``schema.py``; wake-ups in ``listener.py``; the enqueue
statement and backlog limits in ``enqueue.py``; group commit of concurrent enqueues in
``batching.py``; workflows in ``steps.py``; lapsed leases in ``leases.py``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
    sort_key,
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
from offload.stores.postgres import enqueue, flow, leases, schema, steps
from offload.stores.postgres.appconn import psycopg_connection
from offload.stores.postgres.batching import Batcher
from offload.stores.postgres.cancels import Cancels
from offload.stores.postgres.listener import Listener
from offload.stores.postgres.options import parse_postgres_url
from offload.stores.postgres.rows import (
    STATES,
    complete_params,
    first_line,
    is_job_id,
    queries_for,
    record,
)

log = logging.getLogger("offload.store.postgres")

Conn = psycopg.AsyncConnection[TupleRow]

# Lapsed leases one reaper pass handles, and finished jobs one purge statement deletes.
REAP_BATCH = 1000
PURGE_BATCH = 5000
# Ids of claimed workflow steps kept for their outcomes; past it (claims never completed
# here) the set starts again, and an outcome of a step it forgot costs one statement more.
CLAIMED_MAX = 100_000
# How often a live view's wait asks the server for its transaction horizon.
CHANGES_POLL_SECONDS = 0.5
# Errors by which the server or the network failed the operation (not the statement).
_UNREACHABLE = (psycopg.OperationalError, PoolTimeout, OSError, TimeoutError)


class PostgresStore:
    """See the module docstring."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opts = parse_postgres_url(url)
        self._q = queries_for(self.opts)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener = Listener(self.opts)
        self._cancels = Cancels(self.opts, self._q, self._listener, self._rows)
        self._batcher: Batcher | None = None
        # Keeps the advisory locks of flow control (flow.py) of two schemas apart.
        self._lock_prefix = f"offload {self.opts.schema}:"
        # The steps this process claimed: their outcomes go to steps.complete at once.
        self._claimed_steps: set[str] = set()

    # --- plumbing --------------------------------------------------------------------

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"PostgreSQL at {self.opts.display_url} unreachable while {what} "
            f"({first_line(exc)}); check that the server is running and reachable"
        )

    async def open(self) -> None:
        if self._pool is not None:
            return
        await self._prepare_schema()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.opts.conninfo,
            min_size=1,
            max_size=self.opts.pool_max,
            kwargs={
                "autocommit": True,
                # None turns server-side prepared statements off (poolers in transaction mode).
                "prepare_threshold": 5 if self.opts.prepare else None,
            },
            timeout=self.opts.op_timeout,
            name="offload",
            open=False,
        )
        await pool.open()
        self._pool = pool
        self._batcher = Batcher(pool, self._send, self.opts.op_timeout)

    async def migrate(self) -> tuple[int, list[int]]:
        """Bring the schema up to date now (``offload migrate``), even with ``migrate=false``."""
        applied = await self._prepare_schema(force=True)
        return schema.SCHEMA_VERSION, applied

    async def _prepare_schema(self, force: bool = False) -> list[int]:
        """One connection of its own, before the pool: a wrong password or a missing database
        becomes one clear error, and the schema is migrated (or checked) before any query.
        Returns the steps applied."""
        try:
            async with asyncio.timeout(self.opts.op_timeout * 4):
                conn = await psycopg.AsyncConnection.connect(self.opts.conninfo, autocommit=True)
                async with conn:
                    if self.opts.migrate or force:
                        return await schema.migrate(conn, self._q, self.opts)
                    await schema.check(conn, self._q, self.opts)
                    return []
        except psycopg.OperationalError as exc:
            raise self._connect_error(exc) from None
        except (OSError, TimeoutError) as exc:
            raise self._unavailable("connecting", exc) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigError(
                f"the user of {self.opts.display_url} may not create offload's tables in "
                f"schema {self.opts.schema!r} ({first_line(exc)}); grant it CREATE on the "
                "schema, or run `offload migrate` once as a user who may"
            ) from None

    def _connect_error(self, exc: psycopg.OperationalError) -> Exception:
        text = first_line(exc)
        url = self.opts.display_url
        if "password authentication failed" in text or "no password supplied" in text:
            return ConfigError(
                f"PostgreSQL at {url} refused the login ({text}); check the user and password "
                "in the URL (postgresql://user:password@host:5432/database)"
            )
        if "does not exist" in text and "database" in text:
            return ConfigError(
                f"PostgreSQL at {url}: {text}; create it (createdb NAME) or name an existing "
                "database in the URL"
            )
        if "role" in text and "does not exist" in text:
            return ConfigError(f"PostgreSQL at {url}: {text}; name an existing user in the URL")
        return self._unavailable("connecting", exc)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.close()
        await self._listener.stop()
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[Conn]:
        """A pooled connection for one operation, bounded by ``op_timeout``; a failure of the
        server or the network is ``StoreUnavailable`` (and the pool drops broken
        connections), so callers never see a driver's exception."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open; call open() first")
        try:
            async with asyncio.timeout(self.opts.op_timeout):
                async with pool.connection() as conn:
                    yield conn
        except _UNREACHABLE as exc:
            # The pool itself drops a connection that broke; the next operation takes
            # another or connects afresh.
            raise self._unavailable(what, exc) from None

    async def _rows(self, what: str, query: str, params: dict[str, Any]) -> list[TupleRow]:
        async with self._conn(what) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description is not None else []

    async def _count(self, what: str, query: str, params: dict[str, Any]) -> int:
        async with self._conn(what) as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount

    async def now(self) -> float:
        rows = await self._rows("reading the clock", self._q["now"], {})
        return float(rows[0][0])

    # --- enqueue -----------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        jobs = list(jobs)
        if not jobs:
            return []
        batcher = self._batcher
        if batcher is None:
            raise StoreUnavailable("the PostgreSQL store is not open; call open() first")
        if steps.stepped(jobs):
            # A transaction of its own (steps.settle), so not batched with other callers'.
            async with self._conn("enqueueing a workflow") as conn:
                records = await enqueue.send_steps(
                    conn, self._q, self.opts.channel, self._lock_prefix, jobs, None
                )
        elif enqueue.capped(jobs):
            # Not batched with other callers': a refusal must fail this call alone.
            async with self._conn("enqueueing") as conn:
                records = await enqueue.send_capped(
                    conn, self._q, self.opts.channel, self._lock_prefix, jobs, None
                )
        else:
            try:
                records = await batcher.enqueue(jobs)
            except _UNREACHABLE as exc:
                raise self._unavailable("enqueueing", exc) from None
        self._listener.notify_local([j.queue for j in jobs])
        return records

    async def _send(self, conn: Conn, jobs: list[NewJob]) -> list[JobRecord]:
        return await enqueue.send(conn, self._q, self.opts.channel, jobs, None)

    async def enqueue_in(self, connection: Any, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """``enqueue`` on the application's connection, inside its open transaction: the jobs
        exist for workers once it commits (the notification is sent then) and never if it
        rolls back. ``connection`` is a psycopg ``AsyncConnection``, or SQLAlchemy's
        ``AsyncConnection`` or ``AsyncSession`` on psycopg (see ``psycopg_connection``)."""
        jobs = list(jobs)
        if not jobs:
            return []
        conn = await psycopg_connection(connection)
        try:
            # No prepared statements: the connection is the application's, not ours.
            if steps.stepped(jobs):
                return await enqueue.send_steps(
                    conn, self._q, self.opts.channel, self._lock_prefix, jobs, False
                )
            if enqueue.capped(jobs):
                return await enqueue.send_capped(
                    conn, self._q, self.opts.channel, self._lock_prefix, jobs, False
                )
            return await enqueue.send(conn, self._q, self.opts.channel, jobs, False)
        except _UNREACHABLE as exc:
            raise self._unavailable("enqueueing in the application's transaction", exc) from None

    # --- claim and running jobs ---------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> list[JobRecord]:
        queues = queue_list(request.queues)
        params: dict[str, Any] = {
            "limit": request.limit,
            "ttl": request.ttl,
            "worker": request.worker_id,
        }
        if queues is None:
            where = ""
        elif len(queues) == 1:
            where = self._q["claim_one"]
            params["queue"] = queues[0]
        else:
            where = self._q["claim_some"]
            params["queues"] = queues
        query = self._q["claim"].replace("{where}", where)
        async with self._conn("claiming jobs") as conn:
            records = await flow.claim(conn, query, params, self._q, self._lock_prefix)
        records.sort(key=sort_key)
        claimed = self._claimed_steps
        if len(claimed) > CLAIMED_MAX:  # claims never completed here
            claimed.clear()
        claimed.update(r.id for r in records if "workflow" in r.meta)
        return records

    async def wait_claim(
        self, request: ClaimRequest, timeout: float, stop: asyncio.Event
    ) -> list[JobRecord]:
        await self._listener.start()
        if not self._listener.connected:
            return await wait_then_claim(self, request, timeout, stop)
        # Registered before the claim looks, so a job committed after that look wakes it.
        fut = self._listener.register(request.queues)
        try:
            jobs = await self.claim(request)
            if jobs or stop.is_set():
                return jobs
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    (fut, stopper), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopper.cancel()
            if stop.is_set() or not fut.done():
                return []
            return await self.claim(request)
        finally:
            self._listener.discard(fut)

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        await self._listener.start()
        fut = self._listener.register(queues)
        try:
            await asyncio.wait((fut,), timeout=self._listener.limit(timeout))
        finally:
            self._listener.discard(fut)

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        leases = list(leases)
        if not leases:
            return set(), set()
        rows = await self._rows(
            "renewing leases",
            self._q["heartbeat"],
            {
                "ids": [i for i, _ in leases],
                "attempts": [a for _, a in leases],
                "worker": worker_id,
                "ttl": ttl,
            },
        )
        held = {r[0] for r in rows}
        lost = {i for i, _ in leases if i not in held}
        return lost, {r[0] for r in rows if r[1]}

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        outcomes = list(outcomes)
        if not outcomes:
            return []
        claimed = self._claimed_steps
        if any(o.id in claimed for o in outcomes):
            rows = await self._complete_steps(outcomes)
        else:
            history, params = complete_params(outcomes)
            query = self._q["complete_history" if history else "complete"]
            rows = await self._rows("completing jobs", query, params)
            if len(rows) < len(outcomes):
                # Fenced out, or steps claimed by another process: the steps' statement
                # applies those and their rules, and fences out the others again.
                done = {r[0] for r in rows}
                rows += await self._complete_steps([o for o in outcomes if o.id not in done])
        claimed.difference_update(o.id for o in outcomes)
        applied = {r[0] for r in rows}
        groups = {r[1] for r in rows if r[1] is not None}
        if groups:
            await self._release(groups)
        return [o.id in applied for o in outcomes]

    async def _complete_steps(self, outcomes: list[Outcome]) -> builtins.list[TupleRow]:
        async with self._conn("completing workflow steps") as conn:
            rows, queues = await steps.complete(conn, self._q, outcomes, self.opts.channel)
        if queues:
            self._listener.notify_local(queues)
        return rows

    async def _release(self, groups: set[str] | None) -> None:
        """Let the jobs held for a slot of ``groups`` go, now that jobs of theirs stopped
        running (``None``: of every group). A failure here is only logged: the outcomes
        are applied, and the reaper's next pass releases what this one did not."""
        try:
            async with self._conn("releasing held jobs") as conn:
                queues = await flow.release(
                    conn, self._q, groups, self._lock_prefix, self.opts.channel
                )
        except StoreUnavailable as exc:
            log.warning("held jobs not released: %s", exc, extra={"action": "release_failed"})
            return
        if queues:
            self._listener.notify_local(queues)

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        params = {
            "progress": dump_progress(Progress(fraction, message)),
            "id": job_id,
            "worker": worker_id,
            "attempt": attempt,
        }
        return await self._count("storing progress", self._q["set_progress"], params) == 1

    async def requeue_expired(self) -> int:
        async with self._conn("requeueing lapsed leases") as conn:
            lapsed, queues, groups = await leases.reap(conn, self._q, self.opts.channel, REAP_BATCH)
        if not lapsed:
            # A pass with nothing lapsed releases the jobs held for a free slot, should a
            # release after an outcome have failed (one look at an index, nearly always
            # empty).
            await self._release(None)
            return 0
        self._listener.notify_local(queues)
        if groups:
            await self._release(groups)
        return lapsed

    # --- reading -----------------------------------------------------------------------

    async def limit_usage(self, keys: Sequence[str]) -> builtins.list[LimitUsage]:
        """``FlowControl``: running jobs, tokens and waiting jobs of each key."""
        names = list(dict.fromkeys(keys))
        if not names:
            return []
        async with self._conn("reading limit usage") as conn:
            return await flow.usage(conn, self._q, names)

    async def queued_depths(self, tasks: Sequence[str], queues: Sequence[str]) -> dict[str, int]:
        """``QueueCaps``: the backlog of each capped task and each queue."""
        async with self._conn("reading backlogs") as conn:
            return await enqueue.depths(conn, self._q, tasks, queues)

    async def get(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        rows = await self._rows("reading a job", self._q["job_by_id"], {"id": job_id})
        return record(rows[0]) if rows else None

    async def activity(self, since: float, bucket: float) -> list[Activity]:
        check_activity(since, bucket)
        params = {"since": since, "bucket": bucket}
        rows = await self._rows("reading activity", self._q["activity"], params)
        return tally_activity(((float(n), s, int(c)) for n, s, c in rows), bucket)

    async def changes(self, since: str | None, timeout: float) -> str:
        """``ChangeFeed``: the server's transaction horizon, which a write that changed
        jobs moves, as does any other write on the server (a busy application database
        reads as always changed, which costs a live view only its redraws)."""

        async def read() -> str:
            rows = await self._rows("reading the change token", self._q["change_token"], {})
            return str(rows[0][0])

        return await poll_changes(read, since, timeout, CHANGES_POLL_SECONDS)

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        rows = await self._rows(
            "listing jobs",
            self._q["list_jobs" if filter.key is None else "list_key"],
            {
                "states": [s.value for s in filter.states] or None,
                "tasks": list(filter.tasks) or None,
                "queues": list(filter.queues) or None,
                "before": upper_id(filter, cursor),
                "from": id_bounds(filter)[0],
                "key": filter.key,
                "limit": limit + 1,
            },
        )
        jobs = [record(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(jobs, encode_cursor(jobs[-1].id) if more and jobs else None)

    async def counts(self) -> dict[tuple[str, JobState], int]:
        rows = await self._rows("counting jobs", self._q["counts"], {})
        return {(q, STATES[s]): int(n) for q, s, n in rows}

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        params = {"queues": queue_list(queues)}
        rows = await self._rows("reading the next due time", self._q["next_run_at"], params)
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # --- operator actions --------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        params = self._cancels.params(job_id)
        if not await self._rows("cancelling a job", self._q["cancel"], params):
            # Finished, or a workflow step, which the statement leaves to steps.cancel.
            async with self._conn("cancelling a workflow step") as conn:
                queues = await steps.cancel(conn, self._q, job_id, self.opts.channel)
                await conn.execute(self._q["cancel_notify_steps"], params)
            self._listener.notify_local(queues)
        self._cancels.poke()
        return await self.get(job_id)

    async def cancel_requests(self, worker_id: str, timeout: float) -> set[str]:
        """``CancelSignals`` (cancels.py)."""
        return await self._cancels.requests(worker_id, timeout)

    async def steps(self, workflow: str) -> builtins.list[JobRecord]:
        """``Workflows``: every job of the workflow, in the order stored."""
        if not is_job_id(workflow):
            return []
        async with self._conn("reading a workflow") as conn:
            return await steps.workflow(conn, self._q, workflow)

    async def retry(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        rows = await self._rows("retrying a job", self._q["retry"], {"id": job_id})
        if not rows:
            job = await self.get(job_id)
            if job is None:
                return None
            if job.state in (JobState.FAILED, JobState.CANCELLED):
                # Not retried by the statement: a workflow step, resumed with its workflow.
                async with self._conn("retrying a workflow") as conn:
                    queues = await steps.resume(conn, self._q, job_id, self.opts.channel)
                if queues is not None:
                    self._listener.notify_local(queues)
                    return await self.get(job_id)
            raise InvalidTransition(
                f"job {job_id} is {job.state.value}; only failed or cancelled jobs can be retried"
            )
        job = record(rows[0])
        await self._rows(
            "retrying a job", self._q["notify"], {"channel": self.opts.channel, "queue": job.queue}
        )
        self._listener.notify_local([job.queue])
        return job

    async def delete(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        rows = await self._rows("deleting a job", self._q["delete"], {"id": job_id})
        if rows:
            return record(rows[0])
        job = await self.get(job_id)
        if job is None:
            return None
        raise InvalidTransition(not_deletable(job_id, job.state))

    async def purge(self, older_than: float) -> int:
        total = 0
        while True:
            n = await self._count(
                "purging jobs", self._q["purge"], {"before": older_than, "limit": PURGE_BATCH}
            )
            total += n
            if n < PURGE_BATCH:
                return total

    # --- schedules ---------------------------------------------------------------------

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        wanted = list(names)
        if not wanted:
            return {}
        rows = await self._rows("reading schedules", self._q["schedule_states"], {"names": wanted})
        return {n: ScheduleState(n, bool(p), f) for n, p, f in rows}

    async def advance_schedules(self, marks: dict[str, float]) -> None:
        if not marks:
            return
        params = {"names": list(marks), "marks": list(marks.values())}
        await self._count("advancing schedules", self._q["advance_schedules"], params)

    async def pause_schedules(self, names: Sequence[str], paused: bool) -> None:
        if not names:
            return
        params = {"names": list(names), "paused": paused}
        await self._count("pausing schedules", self._q["pause_schedules"], params)

    # --- worker registry: one row per live worker, by the server's clock ------------------

    async def record_worker(self, info: WorkerInfo, ttl: float) -> None:
        params = {
            "id": info.id,
            "host": info.host,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "started_at": info.started_at,
            "running": info.running,
            "ttl": check_worker_ttl(ttl),
        }
        await self._count("recording a worker", self._q["record_worker"], params)

    async def forget_worker(self, worker_id: str) -> None:
        await self._count("forgetting a worker", self._q["forget_worker"], {"id": worker_id})

    async def workers(self) -> builtins.list[WorkerInfo]:
        rows = await self._rows("reading workers", self._q["live_workers"], {})
        return [
            WorkerInfo(i, h, p, tuple(q), c, st, r, seen) for i, h, p, q, c, st, r, seen in rows
        ]
