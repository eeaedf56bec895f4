"""An in-process store (``memory://``) for users' unit tests and the eager mode.

It implements the full contract, so the conformance suite runs against it too; nothing
survives the process, which is the point.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from offload.errors import InvalidTransition
from offload.records import JobRecord, JobState, Progress
from offload.stores._common import (
    apply_outcome,
    check_activity,
    encode_cursor,
    fenced,
    lease_expired_error,
    lease_requeued_error,
    matches,
    not_deletable,
    poll_changes,
    queued_record,
    sort_key,
    tally_activity,
    upper_id,
    wait_then_claim,
)
from offload.stores.base import (
    Activity,
    ClaimRequest,
    JobFilter,
    NewJob,
    Outcome,
    Page,
    ScheduleState,
    WorkerInfo,
    check_worker_ttl,
)
from offload.stores.cancels import CancelWatch
from offload.stores.memory_steps import Steps


class MemoryStore:
    def __init__(self, url: str = "memory://", clock: Callable[[], float] | None = None) -> None:
        self.url = url
        self._jobs: dict[str, JobRecord] = {}
        # Claim order without scanning every job: each job that becomes queued goes into its
        # queue's ``_delayed`` heap (by run_at); a claim moves the due ones into the queue's
        # ``_ready`` heap (in claim order). Entries are never updated in place: one that no
        # longer matches its job (claimed, cancelled, rescheduled, purged) is dropped when
        # reached. Every queue that ever held a queued job has a ``_delayed`` heap.
        self._delayed: dict[str, list[tuple[float, int, JobRecord]]] = {}
        self._ready: dict[str, list[tuple[tuple[int, float, str], int, JobRecord]]] = {}
        # Jobs claimed and perhaps still running, so the reaper looks at these only; an entry
        # whose job has since left the running state is dropped when the reaper reaches it.
        self._running: dict[str, JobRecord] = {}
        self._seq = itertools.count()
        self._keys: dict[tuple[str, str], str] = {}
        self._schedules: dict[str, ScheduleState] = {}
        # Worker id -> (its info, when it lapses).
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._changed = asyncio.Event()
        self._now: Callable[[], float] = clock or time.time
        self._steps = Steps(self._jobs, self._queued)
        # Every cancel happens in this process: a poke from ``cancel`` is all it takes.
        self._cancels = CancelWatch(self._flagged)

    async def open(self) -> None:
        self._changed = asyncio.Event()

    async def close(self) -> None:
        return None

    async def now(self) -> float:
        return self._now()

    def _wake(self) -> None:
        self._changed.set()

    async def changes(self, since: str | None, timeout: float) -> str:
        """``ChangeFeed`` by fingerprint: every job's id, state and attempt, read whole on
        each poll, which suits a store that only tests and eager runs hold."""

        async def read() -> str:
            jobs = self._jobs.values()
            return str(hash(tuple((j.id, j.state, j.attempt) for j in jobs)))

        return await poll_changes(read, since, timeout, 0.05)

    def _queued(self, job: JobRecord) -> None:
        """Index a job that has just become queued (see ``claim``)."""
        heapq.heappush(self._delayed.setdefault(job.queue, []), (job.run_at, next(self._seq), job))

    def _live(self, job: JobRecord) -> bool:
        return job.state is JobState.QUEUED and self._jobs.get(job.id) is job

    def _current_delayed(self, entry: tuple[float, int, JobRecord]) -> bool:
        run_at, _, job = entry
        return self._live(job) and job.run_at == run_at

    def _current_ready(self, entry: tuple[tuple[int, float, str], int, JobRecord]) -> bool:
        key, _, job = entry
        return self._live(job) and key == sort_key(job)

    def _queue_names(self, queues: Sequence[str] | None) -> list[str]:
        if queues is None:
            return list(self._delayed)
        return [q for q in dict.fromkeys(queues) if q in self._delayed]

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        now = self._now()
        out: list[JobRecord] = []
        steps = self._steps
        known = steps.known(jobs, self._keys) if any(j.step is not None for j in jobs) else {}
        for new in jobs:
            if known and new.step is not None and new.step.workflow in known:
                out.append(self._jobs[known[new.step.workflow]].copy())
                continue
            if new.key is not None:
                existing_id = self._keys.get((new.task, new.key))
                if existing_id is not None and existing_id in self._jobs:
                    out.append(self._jobs[existing_id].copy())
                    continue
            record = queued_record(new, now)
            self._jobs[record.id] = record
            if new.step is None or steps.add(new, record):
                self._queued(record)
            if new.key is not None:
                self._keys[(new.task, new.key)] = record.id
            out.append(record.copy())
        if out:
            self._wake()
        return out

    async def claim(self, request: ClaimRequest) -> list[JobRecord]:
        now = self._now()
        ready = self._ready
        limit, worker_id, ttl = request.limit, request.worker_id, request.ttl
        wanted = self._queue_names(request.queues)
        for name in wanted:
            delayed = self._delayed[name]
            while delayed and delayed[0][0] <= now:
                entry = heapq.heappop(delayed)
                if self._current_delayed(entry):
                    job = entry[2]
                    heapq.heappush(ready.setdefault(name, []), (sort_key(job), entry[1], job))
        names = [q for q in wanted if q in ready]
        claimed: list[JobRecord] = []
        while len(claimed) < limit:
            best: list[tuple[tuple[int, float, str], int, JobRecord]] | None = None
            for name in names:
                heap = ready[name]
                while heap and not self._current_ready(heap[0]):
                    heapq.heappop(heap)
                if heap and (best is None or heap[0][0] < best[0][0]):
                    best = heap
            if best is None:
                break
            job = heapq.heappop(best)[2]
            self._running[job.id] = job
            job.state = JobState.RUNNING
            job.attempt += 1
            job.lease_until = now + ttl
            job.worker_id = worker_id
            job.started_at = now
            claimed.append(job.copy())
        return claimed

    # No blocking claim here: wait, then claim (see Store.wait_claim).
    wait_claim = wait_then_claim

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        now = self._now()
        lost: set[str] = set()
        cancel: set[str] = set()
        for job_id, attempt in leases:
            job = self._jobs.get(job_id)
            if job is None or not fenced(job, worker_id, attempt):
                lost.add(job_id)
                continue
            job.lease_until = now + ttl
            if job.cancel_requested:
                cancel.add(job_id)
        return lost, cancel

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        now = self._now()
        applied = []
        for outcome in outcomes:
            job = self._jobs.get(outcome.id)
            if job is None or not fenced(job, outcome.worker_id, outcome.attempt):
                applied.append(False)
                continue
            apply_outcome(job, outcome, now)
            if job.state is not JobState.RUNNING:
                self._running.pop(job.id, None)
                if job.id in self._steps:
                    self._steps.ended(job, outcome, now)
            if job.state is JobState.QUEUED:
                self._queued(job)
            applied.append(True)
        self._wake()
        return applied

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        job = self._jobs.get(job_id)
        if job is None or not fenced(job, worker_id, attempt):
            return False
        job.progress = Progress(fraction, message)
        return True

    async def requeue_expired(self) -> int:
        now = self._now()
        count = 0
        running = self._running
        for job in list(running.values()):
            if job.state is not JobState.RUNNING or self._jobs.get(job.id) is not job:
                del running[job.id]  # finished, requeued or purged since its claim
                continue
            if job.lease_until is not None and job.lease_until < now:
                del running[job.id]
                count += 1
                job.lease_until = None
                if job.attempt >= job.max_attempts:
                    job.state = JobState.FAILED
                    job.error = lease_expired_error(job.worker_id)
                    job.add_history(job.error, job.attempt)
                    job.finished_at = now
                    self._steps.failed(job, now)
                else:
                    job.state = JobState.QUEUED
                    job.run_at = now
                    self._queued(job)
                    job.error = lease_requeued_error(job.worker_id)
                    job.add_history(job.error, job.attempt)
        if count:
            self._wake()
        return count

    async def get(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.copy()

    async def activity(self, since: float, bucket: float) -> list[Activity]:
        check_activity(since, bucket)
        return tally_activity(
            (
                (math.floor(j.finished_at / bucket), j.state.value, 1)
                for j in self._jobs.values()
                if j.state.finished and j.finished_at is not None and j.finished_at >= since
            ),
            bucket,
        )

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        below = upper_id(filter, cursor)
        jobs = sorted(
            (
                j
                for j in self._jobs.values()
                if matches(j, filter) and (below is None or j.id < below)
            ),
            key=lambda j: j.id,
            reverse=True,
        )
        page = [j.copy() for j in jobs[:limit]]
        more = len(jobs) > limit
        return Page(page, encode_cursor(page[-1].id) if more and page else None)

    async def counts(self) -> dict[tuple[str, JobState], int]:
        out: dict[tuple[str, JobState], int] = {}
        for job in self._jobs.values():
            k = (job.queue, job.state)
            out[k] = out.get(k, 0) + 1
        return out

    async def cancel(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.id in self._steps:
            self._steps.cancel(job, self._now())
        elif job.state is JobState.QUEUED:
            job.state = JobState.CANCELLED
            job.finished_at = self._now()
        elif job.state is JobState.RUNNING:
            job.cancel_requested = True
        self._cancels.poke()
        return job.copy()

    async def cancel_requests(self, worker_id: str, timeout: float) -> set[str]:
        """``CancelSignals``: woken by ``cancel``, which runs in this process."""
        return await self._cancels.requests(worker_id, timeout)

    async def _flagged(self, worker_id: str) -> set[str]:
        return {
            job.id
            for job in self._running.values()
            if job.cancel_requested
            and job.worker_id == worker_id
            and job.state is JobState.RUNNING
            and self._jobs.get(job.id) is job
        }

    async def retry(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise InvalidTransition(
                f"job {job_id} is {job.state.value}; only failed or cancelled jobs can be retried"
            )
        now = self._now()
        if job_id in self._steps:
            self._steps.resume(job, now)
            self._wake()
            return job.copy()
        job.state = JobState.QUEUED
        job.attempt = 0
        job.run_at = now
        job.finished_at = None
        job.error = None
        job.cancel_requested = False
        self._queued(job)
        self._wake()
        return job.copy()

    async def delete(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if not job.state.finished:
            raise InvalidTransition(not_deletable(job_id, job.state))
        del self._jobs[job_id]
        self._steps.forget(job_id)
        if job.key is not None:
            self._keys.pop((job.task, job.key), None)
        return job

    async def purge(self, older_than: float) -> int:
        doomed = [
            j.id
            for j in self._jobs.values()
            if j.state.finished and j.finished_at is not None and j.finished_at < older_than
        ]
        for job_id in doomed:
            job = self._jobs.pop(job_id)
            self._steps.forget(job_id)
            if job.key is not None:
                self._keys.pop((job.task, job.key), None)
        return len(doomed)

    async def steps(self, workflow: str) -> builtins.list[JobRecord]:
        """``Workflows``: every job of the workflow, in the order stored."""
        return [job.copy() for job in self._steps.workflow(workflow)]

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        # A worker asks after a claim found nothing due: then its queues' ready heaps hold
        # only stale entries, and each delayed heap's first live entry is its earliest job.
        best: float | None = None
        for name in self._queue_names(queues):
            delayed = self._delayed[name]
            while delayed and not self._current_delayed(delayed[0]):
                heapq.heappop(delayed)
            if delayed and (best is None or delayed[0][0] < best):
                best = delayed[0][0]
            heap = self._ready.get(name, [])
            while heap and not self._current_ready(heap[0]):
                heapq.heappop(heap)
            if heap:  # due jobs waiting for a claim: the earliest of them, by a scan
                first = min(e[2].run_at for e in heap if self._live(e[2]))
                best = first if best is None else min(best, first)
        return best

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        out: dict[str, ScheduleState] = {}
        for name in names:
            state = self._schedules.get(name)
            if state is not None:
                out[name] = ScheduleState(name, state.paused, state.fired_until)
        return out

    async def advance_schedules(self, marks: dict[str, float]) -> None:
        for name, until in marks.items():
            state = self._schedules.setdefault(name, ScheduleState(name))
            if state.fired_until is None or until > state.fired_until:
                state.fired_until = until

    async def pause_schedules(self, names: Sequence[str], paused: bool) -> None:
        for name in names:
            self._schedules.setdefault(name, ScheduleState(name)).paused = paused

    # --- worker registry -----------------------------------------------------------------

    async def record_worker(self, info: WorkerInfo, ttl: float) -> None:
        ttl = check_worker_ttl(ttl)
        now = self._now()
        self._workers[info.id] = (replace(info, seen_at=now), now + ttl)

    async def forget_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def workers(self) -> builtins.list[WorkerInfo]:
        now = self._now()
        for worker_id in [w for w, (_, until) in self._workers.items() if until <= now]:
            del self._workers[worker_id]
        return [self._workers[w][0] for w in sorted(self._workers)]
