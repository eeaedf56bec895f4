"""The conformance suite's listing tests for what the dashboard asks: jobs by time of
enqueue and by idempotency key, and the jobs finished per bucket of time.
``StoreConformance`` inherits them; see ``offload.testing.conformance``.

Time bounds are read from the job's id (see ``JobFilter``), so the tests that need jobs at
known times give them ids minted at those times, and a store's clock plays no part in them.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

import pytest

from offload.records import JobError, JobRecord, JobState
from offload.stores.base import (
    Activity,
    ClaimRequest,
    JobFilter,
    NewJob,
    Outcome,
    OutcomeKind,
    Store,
)
from offload.testing.inputs import TTL, done, new_job

# Far enough back that no id minted while the test runs falls among these.
_BASE = 1_700_000_000.0
# A bucket length that divides exactly in binary, so that every store and this test agree
# on which bucket a time falls in, to the last bit.
_BUCKET = 0.25


def id_at(at: float) -> str:
    """A UUIDv7 minted in the millisecond of ``at``, with random low bits."""
    ms = round(at * 1000)
    h = f"{ms:012x}"
    tail = f"{random.getrandbits(62) | (0x2 << 62):016x}"
    return f"{h[:8]}-{h[8:]}-7{random.getrandbits(12):03x}-{tail[:4]}-{tail[4:]}"


def job_at(at: float, task: str = "t", *, queue: str = "default", key: str | None = None) -> NewJob:
    new = new_job(task, queue=queue, key=key)
    new.id = id_at(at)
    return new


async def listed(store: Store, flt: JobFilter, limit: int = 100) -> list[str]:
    """Every id the filter lists, page after page, checking each page's size."""
    ids: list[str] = []
    page = await store.list(flt, limit)
    ids += [j.id for j in page.jobs]
    while page.next_cursor:
        assert len(page.jobs) == limit
        page = await store.list(flt, limit, cursor=page.next_cursor)
        ids += [j.id for j in page.jobs]
    return ids


def _at(job: NewJob) -> float:
    """The time a job's id was minted at (``id_at``), in seconds."""
    return int(job.id.replace("-", "")[:12], 16) / 1000


def newest_first(jobs: list[NewJob] | list[JobRecord]) -> list[str]:
    return sorted((j.id for j in jobs), reverse=True)


def expected_activity(jobs: list[JobRecord], bucket: float) -> list[Activity]:
    tally: dict[int, Counter[str]] = {}
    for job in jobs:
        assert job.finished_at is not None
        tally.setdefault(math.floor(job.finished_at / bucket), Counter())[job.state.value] += 1
    return [
        Activity(n * bucket, c["succeeded"], c["failed"], c["cancelled"])
        for n, c in sorted(tally.items())
    ]


async def finish_some(store: Store, worker: str) -> list[str]:
    """Six jobs that end each way there is (succeeded, failed, cancelled while queued and
    while running); their ids."""
    made = await store.enqueue([new_job("fin", queue="f") for _ in range(6)])
    queued_cancel = made[-1]
    await store.cancel(queued_cancel.id)
    claimed = await store.claim(ClaimRequest(worker, TTL, 5, ["f"]))
    assert 5 == len(claimed)
    err = JobError("RuntimeError", "boom")
    a, b, c, d, e = (j.id for j in claimed)
    outcomes = [
        done(a, worker),
        done(b, worker),
        Outcome(c, worker, 1, OutcomeKind.FAILED, error=err),
        Outcome(d, worker, 1, OutcomeKind.CANCELLED, error=err),
        done(e, worker),
    ]
    assert [True] * 5 == await store.complete(outcomes)
    return [j.id for j in made]


async def records(store: Store, ids: list[str]) -> list[JobRecord]:
    out = []
    for job_id in ids:
        job = await store.get(job_id)
        assert job is not None
        out.append(job)
    return out


@pytest.mark.asyncio
class ListingConformance:
    """Listing by enqueue time and idempotency key; activity per bucket and state."""

    async def test_list_bounds_by_enqueue_time(self, store: Store) -> None:
        """``enqueued_after`` keeps jobs at or after it, ``enqueued_before`` those before
        it, both together the range between; bounds count to the millisecond."""
        jobs = [job_at(_BASE + i) for i in range(10)]
        await store.enqueue(jobs)
        ids = [j.id for j in jobs]

        async def between(after: float | None, before: float | None) -> list[str]:
            return await listed(store, JobFilter(enqueued_after=after, enqueued_before=before))

        assert ids[3:][::-1] == await between(_BASE + 3, None)
        assert ids[:6][::-1] == await between(None, _BASE + 6)
        assert ids[3:6][::-1] == await between(_BASE + 3, _BASE + 6)
        assert ids[4:6][::-1] == await between(_BASE + 3.001, _BASE + 6)
        assert ids[3:7][::-1] == await between(_BASE + 2.9995, _BASE + 6.0005)
        assert [] == await between(_BASE + 6, _BASE + 3)
        assert [] == await between(_BASE + 20, None)
        assert ids[::-1] == await between(None, _BASE + 20)

    async def test_list_time_bounds_follow_the_clock_of_enqueue(self, store: Store) -> None:
        """A job enqueued just now is within seconds of its ``enqueued_at`` either way, so a
        bound a few seconds off the store's clock keeps it or leaves it out for sure."""
        [job] = await store.enqueue([new_job()])
        at = job.enqueued_at
        assert [job.id] == await listed(store, JobFilter(enqueued_after=at - 5))
        assert [job.id] == await listed(store, JobFilter(enqueued_before=at + 5))
        assert [] == await listed(store, JobFilter(enqueued_after=at + 5))
        assert [] == await listed(store, JobFilter(enqueued_before=at - 5))

    async def test_list_time_bounds_with_state_task_and_queue(self, store: Store) -> None:
        """A time bound narrows the state, task and queue filters, and they narrow it."""
        jobs = [
            job_at(_BASE + i, "a" if i % 2 else "b", queue="q" if i % 3 else "r") for i in range(12)
        ]
        await store.enqueue(jobs)
        for i in (2, 5, 8, 11):
            await store.cancel(jobs[i].id)
        inside = jobs[4:10]
        after, before = _BASE + 4, _BASE + 10
        cases: list[tuple[JobFilter, list[NewJob]]] = [
            (
                JobFilter(
                    states=(JobState.CANCELLED,), enqueued_after=after, enqueued_before=before
                ),
                [j for j in inside if jobs.index(j) in (5, 8)],
            ),
            (JobFilter(states=(JobState.QUEUED,), enqueued_after=_BASE + 9), [jobs[9], jobs[10]]),
            (
                JobFilter(tasks=("a",), enqueued_after=after, enqueued_before=before),
                [j for j in inside if j.task == "a"],
            ),
            (
                JobFilter(queues=("r",), enqueued_after=after, enqueued_before=before),
                [j for j in inside if j.queue == "r"],
            ),
            (
                JobFilter(tasks=("b",), queues=("q",), enqueued_before=_BASE + 6),
                [j for j in jobs[:6] if j.task == "b" and j.queue == "q"],
            ),
        ]
        for flt, want in cases:
            assert newest_first(want) == await listed(store, flt), flt

    async def test_list_pages_under_a_time_bound(self, store: Store) -> None:
        """Pages of a bounded listing hold the jobs in range, newest first, across queues,
        with no gap and no repeat; the last page says there is no next one."""
        jobs = [job_at(_BASE + i / 10, queue=f"q{i % 3}") for i in range(40)]
        await store.enqueue(jobs)
        flt = JobFilter(enqueued_after=_BASE + 0.5, enqueued_before=_BASE + 2.7)
        want = newest_first(jobs[5:27])
        for limit in (1, 5, 22, 50):
            assert want == await listed(store, flt, limit), limit
        page = await store.list(flt, 22)
        assert page.next_cursor is None
        only = JobFilter(queues=("q1",), enqueued_after=_BASE + 0.5, enqueued_before=_BASE + 2.7)
        assert newest_first([j for j in jobs[5:27] if j.queue == "q1"]) == await listed(
            store, only, 3
        )

    async def test_list_rare_states_page_across_queues(self, store: Store) -> None:
        """A few failed, cancelled and running jobs among many others, over three queues:
        each state alone and several together list newest first, page by page with no gap
        and no repeat, and under a time bound, a task and a queue as well."""
        jobs = [job_at(_BASE + i / 10, "a" if i % 2 else "b", queue=f"r{i % 3}") for i in range(90)]
        await store.enqueue(jobs)
        by_id = {j.id: j for j in jobs}
        cancelled = [jobs[i] for i in (4, 17, 40, 41, 88)]
        for job in cancelled:
            await store.cancel(job.id)
        # Claims take the oldest first, so the finished and running jobs are the oldest.
        claimed = await store.claim(ClaimRequest("w", TTL, 20, ["r0", "r1", "r2"]))
        err = JobError("RuntimeError", "boom")
        failed = [by_id[j.id] for j in claimed[::3]]
        succeeded = [by_id[j.id] for j in claimed[1::3]]
        running = [by_id[j.id] for j in claimed[2::3]]
        outcomes = [Outcome(j.id, "w", 1, OutcomeKind.FAILED, error=err) for j in failed]
        assert [True] * len(outcomes + succeeded) == await store.complete(
            outcomes + [done(j.id, "w") for j in succeeded]
        )
        taken = {j.id for j in claimed} | {j.id for j in cancelled}
        queued = [j for j in jobs if j.id not in taken]
        of = {
            JobState.FAILED: failed,
            JobState.CANCELLED: cancelled,
            JobState.RUNNING: running,
            JobState.SUCCEEDED: succeeded,
            JobState.QUEUED: queued,
        }
        combos = [(s,) for s in of] + [
            (JobState.FAILED, JobState.CANCELLED),
            (JobState.RUNNING, JobState.FAILED),
            (JobState.QUEUED, JobState.FAILED, JobState.SUCCEEDED),
        ]
        for states in combos:
            want = [j for s in states for j in of[s]]
            for limit in (1, 2, 7, 100):
                got = await listed(store, JobFilter(states=states), limit)
                assert newest_first(want) == got, (states, limit)
            narrow = JobFilter(
                states=states,
                tasks=("a",),
                queues=("r1", "r2"),
                enqueued_after=_BASE + 0.5,
                enqueued_before=_BASE + 8,
            )
            picked = [
                j
                for j in want
                if j.task == "a" and j.queue != "r0" and _BASE + 0.5 <= _at(j) < _BASE + 8
            ]
            assert newest_first(picked) == await listed(store, narrow, 2), states
        page = await store.list(JobFilter(states=(JobState.RUNNING,)), 100)
        assert {"w"} == {j.worker_id for j in page.jobs}
        assert all(j.state is JobState.RUNNING for j in page.jobs)

    async def test_list_by_idempotency_key(self, store: Store) -> None:
        """``key`` lists the jobs holding that key, of any task or of the tasks asked, with
        the other filters and the time bounds; an unknown key lists nothing."""
        a1 = job_at(_BASE + 1, "a", key="k1")
        b1 = job_at(_BASE + 2, "b", queue="q", key="k1")
        a2 = job_at(_BASE + 3, "a", key="k2")
        c1 = job_at(_BASE + 4, "c", key="k1")
        plain = job_at(_BASE + 5, "a")
        await store.enqueue([a1, b1, a2, c1, plain])
        await store.cancel(c1.id)
        cases: list[tuple[JobFilter, list[NewJob]]] = [
            (JobFilter(key="k1"), [a1, b1, c1]),
            (JobFilter(key="k2"), [a2]),
            (JobFilter(key="nope"), []),
            (JobFilter(key="k1", tasks=("a",)), [a1]),
            (JobFilter(key="k1", tasks=("a", "b", "x")), [a1, b1]),
            (JobFilter(key="k2", tasks=("b",)), []),
            (JobFilter(key="k1", queues=("q",)), [b1]),
            (JobFilter(key="k1", states=(JobState.CANCELLED,)), [c1]),
            (JobFilter(key="k1", tasks=("a", "c"), states=(JobState.QUEUED,)), [a1]),
            (JobFilter(key="k1", enqueued_after=_BASE + 2), [b1, c1]),
            (JobFilter(key="k1", tasks=("a", "b", "c"), enqueued_before=_BASE + 4), [a1, b1]),
        ]
        for flt, want in cases:
            assert newest_first(want) == await listed(store, flt), flt
            assert newest_first(want) == await listed(store, flt, 1), flt

    async def test_filter_refuses_bad_bounds(self) -> None:
        """A bound that is not a finite number, or a key that is not a string, is refused
        with the field's name."""
        for bad in (float("nan"), float("inf"), "yesterday", True):
            with pytest.raises(ValueError, match="enqueued_after"):
                JobFilter(enqueued_after=bad)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="enqueued_before"):
                JobFilter(enqueued_before=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key"):
            JobFilter(key=3)  # type: ignore[arg-type]

    async def test_activity_counts_per_bucket_and_state(self, store: Store) -> None:
        """Finished jobs are counted by state in the bucket of their finished_at, oldest
        bucket first; each bucket starts at a multiple of its length."""
        first = await finish_some(store, "w1")
        await asyncio.sleep(2 * _BUCKET)
        second = await finish_some(store, "w2")
        finished = await records(store, first + second)
        since = await store.now() - 3600
        got = await store.activity(since, _BUCKET)
        assert expected_activity(finished, _BUCKET) == got
        assert len(got) >= 2
        for bucket in (60.0, 3600):
            wide = await store.activity(since, bucket)
            assert expected_activity(finished, bucket) == wide
            assert all(a.start % bucket == 0 for a in wide)
        assert (6, 2, 4) == tuple(
            sum(getattr(a, s) for a in got) for s in ("succeeded", "failed", "cancelled")
        )

    async def test_activity_leaves_out_earlier_and_unfinished_jobs(self, store: Store) -> None:
        """Only jobs finished at or after ``since`` count: not those finished earlier, nor
        queued or running ones, nor a failed job retried since (it is queued again)."""
        early = await finish_some(store, "w1")
        await asyncio.sleep(0.05)
        late = await finish_some(store, "w2")
        early_jobs, late_jobs = await records(store, early), await records(store, late)
        last_early = max(j.finished_at or 0.0 for j in early_jobs)
        first_late = min(j.finished_at or 0.0 for j in late_jobs)
        assert last_early < first_late
        await store.enqueue([new_job("idle", queue="f"), new_job("busy", queue="f")])
        await store.claim(ClaimRequest("w3", TTL, 1, ["f"]))
        since = (last_early + first_late) / 2
        assert expected_activity(late_jobs, _BUCKET) == await store.activity(since, _BUCKET)
        [failed] = [j for j in late_jobs if j.state is JobState.FAILED]
        await store.retry(failed.id)
        still = [j for j in late_jobs if j.id != failed.id]
        assert expected_activity(still, _BUCKET) == await store.activity(since, _BUCKET)
        assert [] == await store.activity(await store.now() + 60, _BUCKET)

    async def test_activity_refuses_bad_arguments(self, store: Store) -> None:
        """A bucket that is not a positive number, or a ``since`` that is not a finite one,
        is refused with the argument's name."""
        for bucket in (0, -60, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="bucket"):
                await store.activity(0.0, bucket)
        with pytest.raises(ValueError, match="since"):
            await store.activity(float("nan"), 60)
