"""The conformance suite's tests of each job's error history (``JobRecord.history``): every
attempt that ended in an error leaves an entry, the newest ``HISTORY_MAX`` are kept, and a
retry by hand keeps them. ``StoreConformance`` inherits them; see
``offload.testing.conformance``."""

from __future__ import annotations

import asyncio

import pytest

from offload.records import HISTORY_MAX, TRACEBACK_MAX, JobError, JobRecord, JobState
from offload.stores.base import ClaimRequest, Outcome, OutcomeKind, Store
from offload.testing.inputs import TTL, done, new_job


def _error(n: int, traceback: str | None = None) -> JobError:
    return JobError("RuntimeError", f"boom {n}", traceback or f"Traceback {n}")


async def _end_attempt(store: Store, kind: OutcomeKind, error: JobError | None) -> JobRecord:
    """Claim the job of a one-job store and end the attempt as ``kind``; the job after it."""
    [job] = await store.claim(ClaimRequest("w", TTL))
    outcome = Outcome(job.id, "w", job.attempt, kind, error=error, delay=0.0)
    assert [True] == await store.complete([outcome])
    got = await store.get(job.id)
    assert got is not None
    return got


def _seen(job: JobRecord) -> list[tuple[int | None, str, str]]:
    return [(e.attempt, e.type, e.message) for e in job.history]


@pytest.mark.asyncio
class HistoryConformance:
    """Each error-ending attempt is kept on the job, oldest first (DESIGN §3)."""

    async def test_a_job_without_errors_has_no_history(self, store: Store) -> None:
        """Enqueued, claimed and succeeded, a job has an empty history."""
        [new] = await store.enqueue([new_job()])
        assert [] == (await _got(store, new.id)).history
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert [True] == await store.complete([done(job.id, "w")])
        assert [] == (await _got(store, new.id)).history

    async def test_retries_then_success_keep_each_error(self, store: Store) -> None:
        """Two failed attempts and a success: both errors, with their attempts and
        tracebacks; the success clears ``error`` but not the history."""
        [new] = await store.enqueue([new_job(max_attempts=3)])
        await _end_attempt(store, OutcomeKind.RETRY, _error(1))
        await _end_attempt(store, OutcomeKind.RETRY, _error(2))
        got = await _end_attempt(store, OutcomeKind.SUCCEEDED, None)
        assert (JobState.SUCCEEDED, None) == (got.state, got.error)
        assert [(1, "RuntimeError", "boom 1"), (2, "RuntimeError", "boom 2")] == _seen(got)
        assert ["Traceback 1", "Traceback 2"] == [e.traceback for e in got.history]
        assert new.id == got.id

    async def test_exhausted_attempts_keep_them_all(self, store: Store) -> None:
        """A job that fails every attempt keeps every error; the last is also ``error``."""
        await store.enqueue([new_job(max_attempts=3)])
        await _end_attempt(store, OutcomeKind.RETRY, _error(1))
        await _end_attempt(store, OutcomeKind.RETRY, _error(2))
        got = await _end_attempt(store, OutcomeKind.FAILED, _error(3))
        assert JobState.FAILED == got.state
        assert [(n, "RuntimeError", f"boom {n}") for n in (1, 2, 3)] == _seen(got)
        assert got.error is not None
        assert "boom 3" == got.error.message

    async def test_a_lapsed_lease_adds_an_entry(self, store: Store) -> None:
        """The reaper's error joins the history, both when it requeues and when it fails
        the job, with the attempt that lost its lease."""
        [new] = await store.enqueue([new_job(max_attempts=2)])
        await store.claim(ClaimRequest("dead", 0.05))
        await asyncio.sleep(0.1)
        assert 1 == await store.requeue_expired()
        got = await _got(store, new.id)
        assert [(1, "LeaseExpired")] == [(e.attempt, e.type) for e in got.history]
        assert got.error is not None
        assert got.history[0].message == got.error.message
        await store.claim(ClaimRequest("dead", 0.05))
        await asyncio.sleep(0.1)
        assert 1 == await store.requeue_expired()
        got = await _got(store, new.id)
        assert JobState.FAILED == got.state
        assert [(1, "LeaseExpired"), (2, "LeaseExpired")] == [
            (e.attempt, e.type) for e in got.history
        ]

    async def test_history_keeps_the_newest_entries_and_cuts_tracebacks(self, store: Store) -> None:
        """Past ``HISTORY_MAX`` errors the oldest go; a long traceback keeps its end."""
        total = HISTORY_MAX + 3
        [new] = await store.enqueue([new_job(max_attempts=total)])
        long = "x" * TRACEBACK_MAX + "ValueError: the end"
        for n in range(1, total):
            await _end_attempt(store, OutcomeKind.RETRY, _error(n, long))
        got = await _end_attempt(store, OutcomeKind.FAILED, _error(total, long))
        assert list(range(total - HISTORY_MAX + 1, total + 1)) == [e.attempt for e in got.history]
        for entry in got.history:
            assert entry.traceback is not None
            assert TRACEBACK_MAX == len(entry.traceback)
            assert entry.traceback.endswith("ValueError: the end")
        assert new.id == got.id

    async def test_a_retry_by_hand_keeps_the_history(self, store: Store) -> None:
        """A failed job retried by hand starts a fresh attempt budget with the same past;
        its next error is added after the old ones."""
        [new] = await store.enqueue([new_job(max_attempts=1)])
        await _end_attempt(store, OutcomeKind.FAILED, _error(1))
        retried = await store.retry(new.id)
        assert retried is not None
        assert [(1, "RuntimeError", "boom 1")] == _seen(await _got(store, new.id))
        got = await _end_attempt(store, OutcomeKind.FAILED, _error(2))
        assert [(1, "RuntimeError", "boom 1"), (1, "RuntimeError", "boom 2")] == _seen(got)

    async def test_a_cancelled_attempt_adds_nothing(self, store: Store) -> None:
        """Only retries and failures are kept: a cancelled or requeued attempt is not an
        error of the task's."""
        [new] = await store.enqueue([new_job()])
        await _end_attempt(store, OutcomeKind.REQUEUE, None)
        await _end_attempt(store, OutcomeKind.CANCELLED, JobError("Cancelled", "asked to"))
        assert [] == (await _got(store, new.id)).history


async def _got(store: Store, job_id: str) -> JobRecord:
    got = await store.get(job_id)
    assert got is not None
    return got
