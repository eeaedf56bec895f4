"""The Redis store (``redis://host:6379/0``): every transition is one Lua script.

Each queue's keys share one hash tag, so a queue lives in one Cluster slot and every script
touches one slot; the key layout and what each persistence setting means for durability are in
``docs/redis.md`` (and in ``layout.py``). Time comes from the server (``TIME`` inside the
scripts), so worker clocks never decide when a lease lapses. Per job the hot path costs one
round trip to enqueue and a share of one round trip per batch to claim and to complete.
Connections, timeouts and wake-ups live in ``connection.py``, the fault policy in
``faults.py``, the scans behind listing and purging in ``scan.py``.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from offload.errors import InvalidTransition, StoreUnavailable
from offload.records import JobRecord, JobState, Progress
from offload.stores._common import (
    HISTORY_KINDS,
    dump_error,
    dump_progress,
    history_entry,
    lease_expired_error,
    lease_requeued_error,
    not_deletable,
    poll_changes,
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
)
from offload.stores.redis.cancels import CancelChannels
from offload.stores.redis.caps import any_capped, queued_depths
from offload.stores.redis.connection import RedisConnection
from offload.stores.redis.enqueue import Steps, enqueue_steps
from offload.stores.redis.flow import limit_usage
from offload.stores.redis.layout import record, record_from
from offload.stores.redis.scan import (
    delete_done,
    list_jobs,
    purge_done,
    read_activity,
    read_change_token,
)
from offload.stores.redis.steps import enqueue_flow_steps, workflow_steps
from offload.stores.redis.workers import forget_worker, live_workers, record_worker

# Jobs of concurrent callers sent together in one enqueue call at most (one caller's own
# batch is never split), so one script call never holds the server for long.
COALESCE_MAX = 1000
# Jobs a reaper step handles per script call, so one call never blocks the server.
REAP_BATCH = 1000
# Placeholder the requeue script replaces with the (JSON-escaped) id of the dead worker.
_WORKER_MARK = "\x00W"
# How often a live view's wait reads the counts: one pipelined HGETALL per queue.
CHANGES_POLL_SECONDS = 0.25
_STEP = attrgetter("step")


def _enqueue_steps(conn: RedisConnection, jobs: list[NewJob]) -> Steps:
    """The round trips of an enqueue: a call with workflow steps has its own (steps.py)."""
    if any(map(_STEP, jobs)):
        return enqueue_flow_steps(conn, jobs)
    return enqueue_steps(conn, jobs)


class RedisStore:
    """See the module docstring; ``url`` options are described in ``docs/redis.md``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = RedisConnection(url)
        self._cancels = CancelChannels(self._conn)
        # Enqueue coalescing: while one enqueue is on the wire, later callers wait here and
        # go together in the next round trip.
        self._enqueue_busy = False
        self._enqueue_waiting: collections.deque[
            tuple[list[NewJob], asyncio.Future[list[JobRecord]]]
        ] = collections.deque()
        self._enqueue_drainer: asyncio.Task[None] | None = None
        self._requeue_errors = (
            dump_error(lease_requeued_error(_WORKER_MARK)) or "",
            dump_error(lease_expired_error(_WORKER_MARK)) or "",
        )

    async def open(self) -> None:
        await self._conn.open()

    async def close(self) -> None:
        drainer = self._enqueue_drainer
        if drainer is not None:  # enqueues already accepted from callers go out first
            await asyncio.gather(drainer, return_exceptions=True)
        await self._cancels.close()
        await self._conn.close()

    async def now(self) -> float:
        return await self._conn.now()

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        await self._conn.wait(queues, timeout)

    # --- writes ------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Store jobs in one round trip; concurrent callers share round trips.

        A caller with no enqueue in flight goes at once (a lone producer pays no extra
        latency). Callers arriving while one is in flight are queued and sent together as
        soon as it returns, so a burst of requests each enqueueing one job costs one script
        call per round trip instead of one per job. Each caller still gets only its own
        records, and an error reaches every caller whose jobs were in the failed call."""
        jobs = list(jobs)
        if not jobs:
            return []
        if any_capped(jobs) or any(map(_STEP, jobs)):
            # A call with backlog limits is weighed whole (caps.py): sent with others', a
            # refusal of theirs would be its own. It takes a round trip of its own, as a
            # call with workflow steps does (steps.py), written by a script of its own.
            return await self._enqueue_now(jobs)
        if self._enqueue_busy:
            future: asyncio.Future[list[JobRecord]] = asyncio.get_running_loop().create_future()
            self._enqueue_waiting.append((jobs, future))
            return await future
        self._enqueue_busy = True
        try:
            return await self._enqueue_now(jobs)
        finally:
            if self._enqueue_waiting:
                self._enqueue_drainer = asyncio.create_task(self._drain_enqueues())
            else:
                self._enqueue_busy = False

    async def _drain_enqueues(self) -> None:
        waiting = self._enqueue_waiting
        try:
            while waiting:
                batch: list[tuple[list[NewJob], asyncio.Future[list[JobRecord]]]] = []
                size = 0
                while waiting and (not batch or size + len(waiting[0][0]) <= COALESCE_MAX):
                    item = waiting.popleft()
                    batch.append(item)
                    size += len(item[0])
                live = [(jobs, f) for jobs, f in batch if not f.done()]
                if not live:
                    continue
                try:
                    records = await self._enqueue_now([j for jobs, _ in live for j in jobs])
                except Exception as exc:
                    for _, f in live:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                start = 0
                for jobs, f in live:
                    if not f.done():
                        f.set_result(records[start : start + len(jobs)])
                    start += len(jobs)
        finally:
            self._enqueue_busy = False
            self._enqueue_drainer = None
            while waiting:  # only when cancelled (the loop is closing): fail, never hang
                _, f = waiting.popleft()
                if not f.done():
                    f.set_exception(
                        StoreUnavailable("the Redis store closed before the enqueue was sent")
                    )

    async def _enqueue_now(self, jobs: list[NewJob]) -> list[JobRecord]:
        steps = _enqueue_steps(self._conn, jobs)
        conn = self._conn
        async with conn.guard("enqueue"):
            commands = next(steps)
            try:
                while True:
                    commands = steps.send(await conn.run(commands))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def enqueue_blocking(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """``enqueue`` for a thread outside the event loop (``enqueue_sync``): the same
        round trips over a blocking connection, without a hop to the loop's thread."""
        jobs = list(jobs)
        if not jobs:
            return []
        steps = _enqueue_steps(self._conn, jobs)
        conn = self._conn
        commands = next(steps)
        try:
            while True:
                commands = steps.send(conn.run_blocking("enqueue", commands))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def steps(self, workflow: str) -> builtins.list[JobRecord]:
        """``Workflows``: every job of the workflow, ordered by id (steps.py)."""
        return await workflow_steps(self._conn, workflow)

    async def claim(self, request: ClaimRequest) -> list[JobRecord]:
        layout, scripts = self._conn.layout, self._conn.scripts
        limit, worker_id, ttl = request.limit, request.worker_id, request.ttl
        async with self._conn.guard("claim"):
            names = await self._conn.queue_names(request.queues)
            if not names or limit <= 0:
                return []
            if len(names) == 1:
                shares = {names[0]: limit}
            else:
                shares = await self._split(names, limit)
                if not shares:
                    return []
            commands = []
            for queue, n in shares.items():
                keys = layout.queue(queue)
                commands.append(
                    scripts.evalsha(
                        "claim",
                        [keys.ready, keys.delayed, keys.running, keys.counts],
                        [keys.job, n, worker_id, ttl],
                    )
                )
            results = await self._conn.run(commands)
        return self._claimed(results)

    def _claimed(self, results: list[Any]) -> list[JobRecord]:
        claimed = [record(flat) for result in results for flat in result[1:]]
        if len(results) > 1:
            claimed.sort(key=lambda r: (-r.priority, r.id))
        where = self._conn.where
        for r in claimed:
            where[r.id] = r.queue
        return claimed

    async def wait_claim(
        self, request: ClaimRequest, timeout: float, stop: asyncio.Event
    ) -> list[JobRecord]:
        """The claim rides behind the ``BLPOP`` (see ``RedisConnection.wait_then_run``) when
        one queue is served; over several, the claim first weighs their heads (``_split``),
        which needs a round trip of its own, so it waits and claims in two steps."""
        conn = self._conn
        if stop.is_set() or timeout <= 0:
            return []
        async with conn.guard("claim"):
            names = await conn.queue_names(request.queues)
        if len(names) != 1 or request.limit <= 0:
            return await wait_then_claim(self, request, timeout, stop)
        keys = conn.layout.queue(names[0])
        claim = conn.scripts.evalsha(
            "claim",
            [keys.ready, keys.delayed, keys.running, keys.counts],
            [keys.job, request.limit, request.worker_id, request.ttl],
        )
        results = await conn.wait_then_run(
            request.queues, timeout, [claim], (request.worker_id, stop)
        )
        return [] if results is None else self._claimed(results)

    async def _split(self, names: list[str], limit: int) -> dict[str, int]:
        """Share ``limit`` among queues by the priority and age of their first ready jobs,
        so that a claim over several queues still takes the best jobs first."""
        layout, scripts = self._conn.layout, self._conn.scripts
        commands = []
        for queue in names:
            keys = layout.queue(queue)
            commands.append(scripts.evalsha("peek", [keys.ready, keys.delayed], [keys.job, limit]))
        heads: list[tuple[float, str, str]] = []
        for queue, flat in zip(names, await self._conn.run(commands), strict=True):
            heads.extend((float(flat[k + 1]), flat[k], queue) for k in range(0, len(flat), 2))
        heads.sort()
        shares: dict[str, int] = {}
        for _, _, queue in heads[:limit]:
            shares[queue] = shares.get(queue, 0) + 1
        return shares

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        lost: set[str] = set()
        cancel: set[str] = set()
        if not leases:
            return lost, cancel
        async with self._conn.guard("heartbeat"):
            where = await self._conn.locate(job_id for job_id, _ in leases)
            groups: dict[str, list[Any]] = {}
            for job_id, attempt in leases:
                queue = where.get(job_id)
                if queue is None:
                    lost.add(job_id)
                else:
                    groups.setdefault(queue, []).extend((job_id, attempt))
            commands = []
            for queue, pairs in groups.items():
                keys = self._conn.layout.queue(queue)
                commands.append(
                    self._conn.scripts.evalsha(
                        "heartbeat", [keys.running], [keys.job, worker_id, ttl, *pairs]
                    )
                )
            results = await self._conn.run(commands) if commands else []
        for gone, asked in results:
            lost.update(gone)
            cancel.update(asked)
        return lost, cancel

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        outcomes = list(outcomes)
        if not outcomes:
            return []
        async with self._conn.guard("storing job outcomes"):
            where = await self._conn.locate(o.id for o in outcomes)
            groups: dict[str, list[int]] = {}
            for i, o in enumerate(outcomes):
                queue = where.get(o.id)
                if queue is not None:
                    groups.setdefault(queue, []).append(i)
            commands = []
            for queue, members in groups.items():
                keys = self._conn.layout.queue(queue)
                args: list[Any] = [keys.job]
                for i in members:
                    o = outcomes[i]
                    # A failure's or retry's history entry goes where a result would
                    # (complete.lua): a success's arguments stay as they were.
                    fifth = "" if o.result is None else o.result
                    if o.error is not None and o.kind in HISTORY_KINDS:
                        fifth = history_entry(o.error, o.attempt)
                    args += (
                        o.id,
                        o.worker_id,
                        o.attempt,
                        o.kind.value,
                        fifth,
                        dump_error(o.error) or "",
                        o.delay,
                    )
                commands.append(
                    self._conn.scripts.evalsha(
                        "complete",
                        [
                            keys.ready,
                            keys.delayed,
                            keys.running,
                            keys.done,
                            keys.counts,
                            keys.wake,
                            keys.failed,
                            keys.cancelled,
                        ],
                        args,
                    )
                )
            results = await self._conn.run(commands) if commands else []
        applied = [False] * len(outcomes)
        for members, flags in zip(groups.values(), results, strict=True):
            for i, flag in zip(members, flags, strict=True):
                applied[i] = flag == 1
        for o in outcomes:
            self._conn.where.pop(o.id, None)
        return applied

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        progress = dump_progress(Progress(fraction, message))
        async with self._conn.guard("storing progress"):
            queue = (await self._conn.locate([job_id])).get(job_id)
            if queue is None:
                return False
            job_key = self._conn.layout.queue(queue).job + job_id
            done = await self._conn.call("progress", [job_key], [worker_id, attempt, progress])
        return bool(done == 1)

    async def requeue_expired(self) -> int:
        again, exhausted = self._requeue_errors
        async with self._conn.guard("requeueing expired leases"):
            names = sorted(await self._conn.refresh_known())
            commands = []
            for queue in names:
                keys = self._conn.layout.queue(queue)
                commands.append(
                    self._conn.scripts.evalsha(
                        "requeue",
                        [keys.ready, keys.running, keys.done, keys.counts, keys.wake, keys.failed],
                        [keys.job, REAP_BATCH, again, exhausted],
                    )
                )
            results = await self._conn.run(commands) if commands else []
        return sum(int(n) for n in results)

    async def cancel(self, job_id: str) -> JobRecord | None:
        async with self._conn.guard("cancel"):
            queue = (await self._conn.locate([job_id])).get(job_id)
            if queue is None:
                return None
            keys = self._conn.layout.queue(queue)
            flat = await self._conn.call(
                "cancel",
                [
                    keys.ready,
                    keys.delayed,
                    keys.done,
                    keys.counts,
                    keys.job + job_id,
                    keys.cancelled,
                    keys.wake,
                ],
                [job_id, self._cancels.prefix],
            )
        return None if flat is None else record(flat)

    async def cancel_requests(self, worker_id: str, timeout: float) -> set[str]:
        """``CancelSignals``: the worker's channel, published to by the cancel script."""
        return await self._cancels.requests(worker_id, timeout)

    async def retry(self, job_id: str) -> JobRecord | None:
        async with self._conn.guard("retry"):
            queue = (await self._conn.locate([job_id])).get(job_id)
            if queue is None:
                return None
            keys = self._conn.layout.queue(queue)
            reply = await self._conn.call(
                "retry",
                [
                    keys.ready,
                    keys.done,
                    keys.counts,
                    keys.wake,
                    keys.job + job_id,
                    keys.failed,
                    keys.cancelled,
                ],
                [job_id],
            )
        if reply is None:
            return None
        if isinstance(reply, str):
            raise InvalidTransition(
                f"job {job_id} is {reply}; only failed or cancelled jobs can be retried"
            )
        return record(reply)

    async def advance_schedules(self, marks: dict[str, float]) -> None:
        if not marks:
            return
        layout, scripts = self._conn.layout, self._conn.scripts
        async with self._conn.guard("advancing schedules"):
            await self._conn.run(
                [
                    scripts.evalsha("advance_schedule", [layout.schedule(name)], [repr(until)])
                    for name, until in marks.items()
                ]
            )

    async def pause_schedules(self, names: Sequence[str], paused: bool) -> None:
        if not names:
            return
        layout = self._conn.layout
        async with self._conn.guard("pausing schedules"):
            await self._conn.run(
                [("HSET", layout.schedule(name), "paused", int(paused)) for name in names]
            )

    # --- reads -------------------------------------------------------------------------

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        names = list(names)
        if not names:
            return {}
        layout = self._conn.layout
        async with self._conn.guard("reading schedules"):
            replies = await self._conn.run(
                [("HMGET", layout.schedule(name), "paused", "fired_until") for name in names]
            )
        out: dict[str, ScheduleState] = {}
        for name, (paused, until) in zip(names, replies, strict=True):
            if paused is None and until is None:
                continue
            out[name] = ScheduleState(name, paused == "1", None if until is None else float(until))
        return out

    async def get(self, job_id: str) -> JobRecord | None:
        layout = self._conn.layout
        async with self._conn.guard("reading a job"):
            queue = self._conn.where.get(job_id)
            names = [queue] if queue is not None else sorted(await self._conn.refresh_known())
            asked: set[str] = set()
            while names:
                replies = await self._conn.run(
                    [("HGETALL", layout.queue(q).job + job_id) for q in names]
                )
                for fields in replies:
                    if fields:
                        return record_from(fields)
                asked.update(names)
                names = sorted(await self._conn.refresh_known(0.0) - asked)
        return None

    async def counts(self) -> dict[tuple[str, JobState], int]:
        async with self._conn.guard("counting jobs"):
            names = sorted(await self._conn.refresh_known(0.0))
            replies = (
                await self._conn.run(
                    [("HGETALL", self._conn.layout.queue(q).counts) for q in names]
                )
                if names
                else []
            )
        out: dict[tuple[str, JobState], int] = {}
        for queue, fields in zip(names, replies, strict=True):
            for state, n in fields.items():
                if int(n) > 0:
                    out[(queue, JobState(state))] = int(n)
        return out

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        layout, scripts = self._conn.layout, self._conn.scripts
        async with self._conn.guard("reading the next run time"):
            names = await self._conn.queue_names(queues)
            if not names:
                return None
            replies = await self._conn.run(
                [
                    scripts.evalsha(
                        "next",
                        [layout.queue(q).ready, layout.queue(q).delayed],
                        [layout.queue(q).job],
                    )
                    for q in names
                ]
            )
        times = [float(r) for r in replies if r is not None]
        return min(times) if times else None

    async def delete(self, job_id: str) -> JobRecord | None:
        job = await self.get(job_id)
        if job is None:
            return None
        if not job.state.finished or not await delete_done(self._conn, job):
            now = await self.get(job_id)
            if now is None:  # deleted by someone else meanwhile
                return None
            raise InvalidTransition(not_deletable(job_id, now.state))
        return job

    async def purge(self, older_than: float) -> int:
        return await purge_done(self._conn, older_than)

    async def activity(self, since: float, bucket: float) -> list[Activity]:
        return await read_activity(self._conn, since, bucket)

    async def changes(self, since: str | None, timeout: float) -> str:
        return await poll_changes(
            lambda: read_change_token(self._conn), since, timeout, CHANGES_POLL_SECONDS
        )

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        return await list_jobs(self._conn, filter, limit, cursor)

    async def limit_usage(self, keys: Sequence[str]) -> builtins.list[LimitUsage]:
        return await limit_usage(self._conn, keys)

    # --- worker registry (workers.py) ----------------------------------------------------

    async def queued_depths(self, tasks: Sequence[str], queues: Sequence[str]) -> dict[str, int]:
        return await queued_depths(self._conn, tasks, queues)

    async def record_worker(self, info: WorkerInfo, ttl: float) -> None:
        await record_worker(self._conn, info, ttl)

    async def forget_worker(self, worker_id: str) -> None:
        await self._cancels.forget(worker_id)
        await forget_worker(self._conn, worker_id)

    async def workers(self) -> builtins.list[WorkerInfo]:
        return await live_workers(self._conn)
