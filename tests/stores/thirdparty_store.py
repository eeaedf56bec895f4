"""A store written outside offload, against its public store contract only: the example of
docs/testing.md, which tests/stores/test_thirdparty_store.py runs the conformance suite on.

``CountingStore`` keeps its jobs in another store and counts the calls it forwards, per
operation: what a test reads to see how many round trips a request or a worker costs. It
names nothing of offload but ``offload.stores`` (the protocol and the values it carries) and
``offload.records`` (the job records), as a store in a package of its own would.
"""

from __future__ import annotations

import asyncio
import builtins
from collections import Counter
from collections.abc import Sequence

from offload.records import JobRecord, JobState
from offload.stores import (
    Activity,
    ClaimRequest,
    JobFilter,
    NewJob,
    Outcome,
    Page,
    ScheduleState,
    Store,
)


class CountingStore:
    """A ``Store`` that forwards every call to ``inner`` and counts it in ``calls``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = f"counting+{inner.url}"
        self.calls: Counter[str] = Counter()

    async def open(self) -> None:
        self.calls["open"] += 1
        await self.inner.open()

    async def close(self) -> None:
        self.calls["close"] += 1
        await self.inner.close()

    async def now(self) -> float:
        self.calls["now"] += 1
        return await self.inner.now()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        self.calls["enqueue"] += 1
        return await self.inner.enqueue(jobs)

    async def claim(self, request: ClaimRequest) -> list[JobRecord]:
        self.calls["claim"] += 1
        return await self.inner.claim(request)

    async def wait_claim(
        self, request: ClaimRequest, timeout: float, stop: asyncio.Event
    ) -> list[JobRecord]:
        self.calls["wait_claim"] += 1
        return await self.inner.wait_claim(request, timeout, stop)

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        self.calls["heartbeat"] += 1
        return await self.inner.heartbeat(leases, worker_id, ttl)

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        self.calls["complete"] += 1
        return await self.inner.complete(outcomes)

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        self.calls["set_progress"] += 1
        return await self.inner.set_progress(job_id, worker_id, attempt, fraction, message)

    async def requeue_expired(self) -> int:
        self.calls["requeue_expired"] += 1
        return await self.inner.requeue_expired()

    async def get(self, job_id: str) -> JobRecord | None:
        self.calls["get"] += 1
        return await self.inner.get(job_id)

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        self.calls["list"] += 1
        return await self.inner.list(filter, limit, cursor)

    async def counts(self) -> dict[tuple[str, JobState], int]:
        self.calls["counts"] += 1
        return await self.inner.counts()

    async def activity(self, since: float, bucket: float) -> builtins.list[Activity]:
        self.calls["activity"] += 1
        return await self.inner.activity(since, bucket)

    async def cancel(self, job_id: str) -> JobRecord | None:
        self.calls["cancel"] += 1
        return await self.inner.cancel(job_id)

    async def retry(self, job_id: str) -> JobRecord | None:
        self.calls["retry"] += 1
        return await self.inner.retry(job_id)

    async def delete(self, job_id: str) -> JobRecord | None:
        self.calls["delete"] += 1
        return await self.inner.delete(job_id)

    async def purge(self, older_than: float) -> int:
        self.calls["purge"] += 1
        return await self.inner.purge(older_than)

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        self.calls["next_run_at"] += 1
        return await self.inner.next_run_at(queues)

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        self.calls["wait"] += 1
        await self.inner.wait(queues, timeout)

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        self.calls["schedule_states"] += 1
        return await self.inner.schedule_states(names)

    async def advance_schedules(self, marks: dict[str, float]) -> None:
        self.calls["advance_schedules"] += 1
        await self.inner.advance_schedules(marks)

    async def pause_schedules(self, names: Sequence[str], paused: bool) -> None:
        self.calls["pause_schedules"] += 1
        await self.inner.pause_schedules(names, paused)
