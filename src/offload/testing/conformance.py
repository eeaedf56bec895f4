"""The store conformance suite: the executable form of the ``Store`` contract.

Every store offload ships passes it with no skips. To check a store of your own, subclass
``StoreConformance`` in a test module and provide an async ``store`` fixture that yields an
opened, empty store::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self):
            s = MyStore(...)
            await s.open()
            yield s
            await s.close()

The tests need pytest-asyncio.
"""

from __future__ import annotations

import asyncio

import pytest

from offload.errors import InvalidTransition
from offload.ids import new_id
from offload.records import JobError, JobState
from offload.stores.base import ClaimRequest, JobFilter, Outcome, OutcomeKind, Store
from offload.testing.conformance_cancels import CancelSignalsConformance
from offload.testing.conformance_caps import QueueCapsConformance
from offload.testing.conformance_changes import ChangeFeedConformance
from offload.testing.conformance_flow import FlowControlConformance
from offload.testing.conformance_history import HistoryConformance
from offload.testing.conformance_listing import ListingConformance
from offload.testing.conformance_services import ScheduleConformance, WakeUpConformance
from offload.testing.conformance_workers import WorkerRegistryConformance
from offload.testing.conformance_workflows import WorkflowConformance
from offload.testing.inputs import TTL, done, new_job

__all__ = ["TTL", "StoreConformance", "done", "new_job"]


@pytest.mark.asyncio
class StoreConformance(
    ScheduleConformance,
    WakeUpConformance,
    ListingConformance,
    WorkerRegistryConformance,
    HistoryConformance,
    ChangeFeedConformance,
    FlowControlConformance,
    QueueCapsConformance,
    WorkflowConformance,
    CancelSignalsConformance,
):
    """Behaviour every ``Store`` must show (DESIGN §3 and §4)."""

    # --- enqueue ------------------------------------------------------------------------

    async def test_enqueue_stores_queued_jobs(self, store: Store) -> None:
        """An enqueued job is queued, unattempted and readable with its payload and meta."""
        new = new_job(args='[1, "a"]', kwargs='{"x": 2}', meta={"request_id": "r1"}, timeout=5)
        [record] = await store.enqueue([new])
        got = await store.get(new.id)
        assert got is not None
        assert (JobState.QUEUED, 0, new.id) == (record.state, record.attempt, record.id)
        assert ('[1, "a"]', '{"x": 2}') == (got.args, got.kwargs)
        assert {"request_id": "r1"} == got.meta
        assert 5 == got.timeout
        assert got.run_at <= await store.now() + 0.001

    async def test_enqueue_batch_keeps_order(self, store: Store) -> None:
        """A batch is stored whole and returned in the order given."""
        batch = [new_job() for _ in range(100)]
        records = await store.enqueue(batch)
        assert [n.id for n in batch] == [r.id for r in records]
        counts = await store.counts()
        assert 100 == counts[("default", JobState.QUEUED)]

    async def test_missing_job_is_none(self, store: Store) -> None:
        """Reading an unknown id gives None, not an error."""
        assert await store.get(new_id()) is None

    async def test_idempotency_key_returns_existing_job(self, store: Store) -> None:
        """A key already on record returns that job; keys are unique per task name."""
        first = new_job("t", key="k1")
        [a] = await store.enqueue([first])
        [b] = await store.enqueue([new_job("t", key="k1")])
        [c] = await store.enqueue([new_job("other", key="k1")])
        assert a.id == b.id
        assert c.id != a.id
        assert 2 == sum((await store.counts()).values())

    async def test_idempotency_key_holds_after_the_job_finished(self, store: Store) -> None:
        """A finished job still holds its key until purged; then the key is free again."""
        [a] = await store.enqueue([new_job(key="k")])
        [claimed] = await store.claim(ClaimRequest("w", TTL))
        assert [True] == await store.complete([done(claimed.id, "w")])
        [again] = await store.enqueue([new_job(key="k")])
        assert a.id == again.id
        assert 1 == await store.purge(await store.now() + 1)
        [fresh] = await store.enqueue([new_job(key="k")])
        assert fresh.id != a.id

    async def test_duplicate_key_within_one_batch(self, store: Store) -> None:
        """Two calls with one key in one batch make one job."""
        records = await store.enqueue([new_job(key="same"), new_job(key="same")])
        assert records[0].id == records[1].id

    # --- claim --------------------------------------------------------------------------

    async def test_claim_marks_running_with_lease(self, store: Store) -> None:
        """Claim moves a job to running, counts the attempt and sets the lease and worker."""
        [new] = await store.enqueue([new_job()])
        before = await store.now()
        [job] = await store.claim(ClaimRequest("w1", TTL, limit=10))
        assert (new.id, JobState.RUNNING, 1, "w1") == (
            job.id,
            job.state,
            job.attempt,
            job.worker_id,
        )
        assert job.lease_until is not None
        assert before + TTL - 1 <= job.lease_until <= before + TTL + 1
        assert job.started_at is not None

    async def test_claimed_record_is_the_stored_job(self, store: Store) -> None:
        """A claim returns each job as it is stored after the claim, field for field, also
        for a job claimed again after a retry (with its last error and progress). The error
        history is the exception: a claim need not read it (the worker has no use for it),
        so a claimed record may leave it empty."""
        new = new_job(
            args="[1]", kwargs='{"a": 2}', priority=3, key="k1", meta={"m": 1}, timeout=7.0
        )
        await store.enqueue([new])
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert await store.get(new.id) == job
        assert await store.set_progress(new.id, "w", 1, 0.5, "half")
        err = JobError("RuntimeError", "boom", "tb")
        retry = Outcome(new.id, "w", 1, OutcomeKind.RETRY, error=err, delay=0.0)
        assert [True] == await store.complete([retry])
        [again] = await store.claim(ClaimRequest("w2", TTL))
        assert (2, "w2", err) == (again.attempt, again.worker_id, again.error)
        stored = await store.get(new.id)
        assert stored is not None
        assert [err.for_history(1)] == stored.history
        assert again.history in ([], stored.history)
        again.history = stored.history
        assert stored == again

    async def test_claim_order_priority_then_fifo(self, store: Store) -> None:
        """Higher priority first; within one priority, first in first out."""
        low = [new_job(priority=0) for _ in range(3)]
        high = [new_job(priority=5) for _ in range(3)]
        await store.enqueue([low[0], high[0], low[1], high[1], low[2], high[2]])
        claimed = await store.claim(ClaimRequest("w", TTL, limit=6))
        assert [j.id for j in high + low] == [j.id for j in claimed]

    async def test_claim_respects_limit_and_queues(self, store: Store) -> None:
        """Claim takes at most ``limit`` jobs and only from the queues asked for."""
        await store.enqueue([new_job(queue="a") for _ in range(5)])
        await store.enqueue([new_job(queue="b") for _ in range(5)])
        assert 3 == len(await store.claim(ClaimRequest("w", TTL, 3, ["a"])))
        rest = await store.claim(ClaimRequest("w", TTL, 10, ["a"]))
        assert 2 == len(rest)
        assert {"a"} == {j.queue for j in rest}
        both = await store.claim(ClaimRequest("w", TTL, 10, ["a", "b", "c"]))
        assert 5 == len(both)
        assert [] == await store.claim(ClaimRequest("w", TTL, limit=10))

    async def test_delayed_job_waits_until_due(self, store: Store) -> None:
        """A delayed job is not claimed before its run_at, and is after it."""
        [new] = await store.enqueue([new_job(delay=0.3)])
        assert [] == await store.claim(ClaimRequest("w", TTL))
        due = await store.next_run_at(None)
        assert due is not None
        assert abs(due - new.run_at) < 0.001
        await asyncio.sleep(0.35)
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert new.id == job.id

    async def test_concurrent_claims_never_share_a_job(self, store: Store) -> None:
        """Claims racing each other hand every job to exactly one claimer."""
        await store.enqueue([new_job() for _ in range(60)])
        results = await asyncio.gather(
            *(store.claim(ClaimRequest(f"w{i}", TTL, limit=7)) for i in range(12))
        )
        ids = [j.id for batch in results for j in batch]
        assert 60 == len(ids)
        assert 60 == len(set(ids))

    # --- completion and fencing ---------------------------------------------------------

    async def test_succeed_stores_result(self, store: Store) -> None:
        """A success stores the result and the finish time and ends the lease."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert [True] == await store.complete([done(job.id, "w", result='{"ok": 1}')])
        got = await store.get(job.id)
        assert got is not None
        assert (JobState.SUCCEEDED, '{"ok": 1}') == (got.state, got.result)
        assert got.finished_at is not None
        assert got.lease_until is None

    async def test_completion_is_fenced_by_worker_and_attempt(self, store: Store) -> None:
        """Only the lease holder's current attempt can finish a job, and only once."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert [False] == await store.complete([done(job.id, "intruder")])
        assert [False] == await store.complete([done(job.id, "w", attempt=2)])
        assert [True] == await store.complete([done(job.id, "w")])
        assert [False] == await store.complete([done(job.id, "w")])

    async def test_batch_completion_reports_each_outcome(self, store: Store) -> None:
        """A batch of outcomes is applied item by item, each fenced on its own."""
        await store.enqueue([new_job() for _ in range(3)])
        jobs = await store.claim(ClaimRequest("w", TTL, limit=3))
        outcomes = [
            done(jobs[0].id, "w"),
            Outcome(jobs[1].id, "w", 1, OutcomeKind.FAILED, error=JobError("E", "bad", "tb")),
            done(jobs[2].id, "other"),
        ]
        assert [True, True, False] == await store.complete(outcomes)
        failed = await store.get(jobs[1].id)
        assert failed is not None
        assert JobState.FAILED == failed.state
        assert JobError("E", "bad", "tb") == failed.error

    async def test_batch_of_successes_keeps_each_result_and_fence(self, store: Store) -> None:
        """Successes applied together still store each job's own result, and one whose fence
        fails leaves its job running while the rest of the batch is applied once."""
        await store.enqueue([new_job() for _ in range(4)])
        jobs = await store.claim(ClaimRequest("w", TTL, limit=4))
        ok = [
            Outcome(j.id, "w", 1, OutcomeKind.SUCCEEDED, result=str(i)) for i, j in enumerate(jobs)
        ]
        assert [True, True, True] == await store.complete(ok[:3])
        for i, job in enumerate(jobs[:3]):
            got = await store.get(job.id)
            assert got is not None
            assert (JobState.SUCCEEDED, str(i)) == (got.state, got.result)
        mixed = [ok[3], Outcome(jobs[0].id, "w", 1, OutcomeKind.SUCCEEDED, result="again")]
        assert [True, False] == await store.complete(mixed)
        first = await store.get(jobs[0].id)
        last = await store.get(jobs[3].id)
        assert first is not None
        assert last is not None
        assert (JobState.SUCCEEDED, "0") == (first.state, first.result)
        assert (JobState.SUCCEEDED, "3") == (last.state, last.result)
        await store.enqueue([new_job() for _ in range(2)])
        pair = await store.claim(ClaimRequest("w", TTL, limit=2))
        fenced = [
            Outcome(pair[0].id, "other", 1, OutcomeKind.SUCCEEDED, result="x"),
            Outcome(pair[1].id, "w", 1, OutcomeKind.SUCCEEDED, result="y"),
        ]
        assert [False, True] == await store.complete(fenced)
        still = await store.get(pair[0].id)
        assert still is not None
        assert (JobState.RUNNING, None) == (still.state, still.result)

    async def test_retry_outcome_requeues_later(self, store: Store) -> None:
        """A retry puts the job back in queued after the delay, keeping the attempt count."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        err = JobError("RuntimeError", "boom")
        retry = Outcome(job.id, "w", 1, OutcomeKind.RETRY, error=err, delay=0.2)
        assert [True] == await store.complete([retry])
        got = await store.get(job.id)
        assert got is not None
        assert (JobState.QUEUED, 1, err) == (got.state, got.attempt, got.error)
        assert [] == await store.claim(ClaimRequest("w", TTL))
        await asyncio.sleep(0.25)
        [again] = await store.claim(ClaimRequest("w2", TTL))
        assert 2 == again.attempt

    async def test_requeue_outcome_keeps_a_last_attempt(self, store: Store) -> None:
        """A job requeued by a shutting-down worker keeps at least one attempt to run."""
        await store.enqueue([new_job(max_attempts=1)])
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert [True] == await store.complete([Outcome(job.id, "w", 1, OutcomeKind.REQUEUE)])
        got = await store.get(job.id)
        assert got is not None
        assert JobState.QUEUED == got.state
        assert got.max_attempts >= 2
        assert 1 == len(await store.claim(ClaimRequest("w2", TTL)))

    async def test_release_outcome_undoes_the_claim(self, store: Store) -> None:
        """A job claimed ahead and given back unstarted is queued as if never claimed, and
        can be claimed again at once by anyone; a later release keeps earlier attempts."""
        [new] = await store.enqueue([new_job(max_attempts=1)])
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert [True] == await store.complete([Outcome(job.id, "w", 1, OutcomeKind.RELEASE)])
        got = await store.get(job.id)
        assert got is not None
        assert (JobState.QUEUED, 0, 1) == (got.state, got.attempt, got.max_attempts)
        assert got.started_at is None
        assert got.worker_id is None
        assert got.lease_until is None
        assert {(new.queue, JobState.QUEUED): 1} == await store.counts()
        [again] = await store.claim(ClaimRequest("w2", TTL))
        assert 1 == again.attempt
        retry = Outcome(job.id, "w2", 1, OutcomeKind.RETRY, error=None, delay=0.0)
        assert [True] == await store.complete([retry])
        [third] = await store.claim(ClaimRequest("w3", TTL))
        assert [True] == await store.complete([Outcome(job.id, "w3", 2, OutcomeKind.RELEASE)])
        got = await store.get(job.id)
        assert got is not None
        assert (JobState.QUEUED, 1) == (got.state, got.attempt)
        assert 2 == third.attempt

    async def test_release_is_fenced_and_honours_a_cancel_request(self, store: Store) -> None:
        """Only the lease holder can release; a release of a job whose cancellation was
        requested while it waited ends the job cancelled."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert [False] == await store.complete([Outcome(job.id, "x", 1, OutcomeKind.RELEASE)])
        cancelling = await store.cancel(job.id)
        assert cancelling is not None
        assert [True] == await store.complete([Outcome(job.id, "w", 1, OutcomeKind.RELEASE)])
        got = await store.get(job.id)
        assert got is not None
        assert JobState.CANCELLED == got.state
        assert got.finished_at is not None
        assert [] == await store.claim(ClaimRequest("w2", TTL))

    async def test_cancelled_outcome(self, store: Store) -> None:
        """A task that cancels itself ends cancelled."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        await store.complete([Outcome(job.id, "w", 1, OutcomeKind.CANCELLED)])
        got = await store.get(job.id)
        assert got is not None
        assert JobState.CANCELLED == got.state

    async def test_progress_is_fenced(self, store: Store) -> None:
        """Progress is stored for the lease holder only."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        assert await store.set_progress(job.id, "w", 1, 0.5, "half")
        assert not await store.set_progress(job.id, "x", 1, 0.9, "no")
        got = await store.get(job.id)
        assert got is not None
        assert got.progress is not None
        assert (0.5, "half") == (got.progress.fraction, got.progress.message)

    # --- leases -------------------------------------------------------------------------

    async def test_heartbeat_extends_lease_and_reports_lost(self, store: Store) -> None:
        """A heartbeat renews held leases and names the ones the worker no longer holds."""
        await store.enqueue([new_job(), new_job()])
        a, b = await store.claim(ClaimRequest("w", 1.0, limit=2))
        lost, cancel = await store.heartbeat([(a.id, 1), (b.id, 2)], "w", TTL)
        assert ({b.id}, set()) == (lost, cancel)
        got = await store.get(a.id)
        assert got is not None
        assert got.lease_until is not None
        assert got.lease_until > await store.now() + TTL - 5

    async def test_expired_lease_is_requeued_then_fenced(self, store: Store) -> None:
        """A lapsed lease puts the job back; the old worker can no longer finish it."""
        await store.enqueue([new_job(max_attempts=3)])
        [job] = await store.claim(ClaimRequest("dead", 0.1))
        await asyncio.sleep(0.15)
        assert 1 == await store.requeue_expired()
        [again] = await store.claim(ClaimRequest("alive", TTL))
        assert (job.id, 2) == (again.id, again.attempt)
        assert [False] == await store.complete([done(job.id, "dead", attempt=1)])
        assert [True] == await store.complete([done(job.id, "alive", attempt=2)])

    async def test_expired_lease_without_attempts_left_fails(self, store: Store) -> None:
        """A crash counts as an attempt: with none left the job fails, with the reason."""
        await store.enqueue([new_job(max_attempts=1)])
        [job] = await store.claim(ClaimRequest("dead", 0.05))
        await asyncio.sleep(0.1)
        assert 1 == await store.requeue_expired()
        got = await store.get(job.id)
        assert got is not None
        assert JobState.FAILED == got.state
        assert got.error is not None
        assert "LeaseExpired" == got.error.type

    async def test_live_leases_are_not_reaped(self, store: Store) -> None:
        """The reaper leaves jobs with a current lease alone."""
        await store.enqueue([new_job()])
        await store.claim(ClaimRequest("w", TTL))
        assert 0 == await store.requeue_expired()

    # --- cancel, retry by hand, purge ---------------------------------------------------

    async def test_cancel_queued_job(self, store: Store) -> None:
        """Cancelling a queued job ends it at once; it is never claimed."""
        [job] = await store.enqueue([new_job()])
        got = await store.cancel(job.id)
        assert got is not None
        assert JobState.CANCELLED == got.state
        assert [] == await store.claim(ClaimRequest("w", TTL))

    async def test_cancel_running_job_is_requested(self, store: Store) -> None:
        """Cancelling a running job asks its worker, who learns it from the heartbeat."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        got = await store.cancel(job.id)
        assert got is not None
        assert (JobState.RUNNING, True) == (got.state, got.cancel_requested)
        assert (set(), {job.id}) == await store.heartbeat([(job.id, 1)], "w", TTL)

    async def test_cancel_finished_job_changes_nothing(self, store: Store) -> None:
        """A finished job stays as it finished; an unknown id gives None."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        await store.complete([done(job.id, "w")])
        got = await store.cancel(job.id)
        assert got is not None
        assert JobState.SUCCEEDED == got.state
        assert await store.cancel(new_id()) is None

    async def test_retry_by_hand(self, store: Store) -> None:
        """A failed job can be queued again with a fresh attempt budget; others cannot."""
        await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w", TTL))
        with pytest.raises(InvalidTransition):
            await store.retry(job.id)
        failed = Outcome(job.id, "w", 1, OutcomeKind.FAILED, error=JobError("E", "m"))
        await store.complete([failed])
        got = await store.retry(job.id)
        assert got is not None
        assert (JobState.QUEUED, 0, None) == (got.state, got.attempt, got.error)
        [again] = await store.claim(ClaimRequest("w", TTL))
        assert 1 == again.attempt
        assert await store.retry(new_id()) is None

    async def test_requeued_jobs_are_claimed_once_each_time(self, store: Store) -> None:
        """A job queued more than once (cancelled and retried by hand, released) is claimed
        once for each time it was queued, in claim order across queues."""
        a = new_job(queue="a", priority=1)
        b = new_job(queue="b", priority=2)
        c = new_job(queue="a")
        await store.enqueue([a, b, c])
        await store.cancel(a.id)
        await store.retry(a.id)
        claimed = await store.claim(ClaimRequest("w", TTL, limit=10))
        assert [b.id, a.id, c.id] == [j.id for j in claimed]
        released = [Outcome(j.id, "w", 1, OutcomeKind.RELEASE) for j in claimed]
        assert [True, True, True] == await store.complete(released)
        again = await store.claim(ClaimRequest("w2", TTL, 10, ["a", "b"]))
        assert [b.id, a.id, c.id] == [j.id for j in again]
        assert [] == await store.claim(ClaimRequest("w2", TTL, limit=10))

    async def test_purge_removes_only_old_finished_jobs(self, store: Store) -> None:
        """Purge deletes finished jobs older than the cut-off and nothing else."""
        await store.enqueue([new_job() for _ in range(3)])
        a, b, _ = await store.claim(ClaimRequest("w", TTL, limit=3))
        await store.complete([done(a.id, "w")])
        await store.enqueue([new_job()])
        assert 0 == await store.purge(await store.now() - 60)
        assert 1 == await store.purge(await store.now() + 1)
        assert await store.get(a.id) is None
        assert await store.get(b.id) is not None
        assert 3 == sum((await store.counts()).values())

    async def test_delete_removes_one_finished_job_and_frees_its_key(self, store: Store) -> None:
        """Delete takes one finished job away, with its count, and its key is free again;
        the others stay."""
        [a, b] = await store.enqueue([new_job(key="k"), new_job()])
        [claimed] = await store.claim(ClaimRequest("w", TTL))
        assert a.id == claimed.id
        await store.complete([done(a.id, "w")])
        gone = await store.delete(a.id)
        assert gone is not None
        assert (a.id, JobState.SUCCEEDED) == (gone.id, gone.state)
        assert await store.get(a.id) is None
        assert await store.delete(a.id) is None
        assert {("default", JobState.QUEUED): 1} == {
            k: n for k, n in (await store.counts()).items() if n
        }
        [fresh] = await store.enqueue([new_job(key="k")])
        assert fresh.id != a.id
        assert [fresh.id, b.id] == [j.id for j in (await store.list(JobFilter(), 10)).jobs]

    async def test_an_id_no_job_could_have_is_not_found(self, store: Store) -> None:
        """Reading or changing a job by an id that is not even of the ids' form (a typo in a
        URL, say) answers "no such job", as any unknown id does."""
        for made_up in ("nope", "", "../etc", "0" * 40):
            assert await store.get(made_up) is None
            assert await store.cancel(made_up) is None
            assert await store.retry(made_up) is None
            assert await store.delete(made_up) is None

    async def test_delete_refuses_queued_and_running_jobs(self, store: Store) -> None:
        """A queued or running job is not deleted (a worker may hold it); it stays as it was,
        claimable or finishable, and a cancelled one can then be deleted."""
        [a, b] = await store.enqueue([new_job(priority=1), new_job()])
        [running] = await store.claim(ClaimRequest("w", TTL))
        assert a.id == running.id
        for job_id in (a.id, b.id):
            with pytest.raises(InvalidTransition):
                await store.delete(job_id)
        assert [True] == await store.complete([done(a.id, "w")])
        await store.cancel(b.id)
        deleted = await store.delete(b.id)
        assert deleted is not None
        assert JobState.CANCELLED == deleted.state
        assert await store.get(b.id) is None
        assert await store.delete(new_id()) is None

    # --- reading ------------------------------------------------------------------------

    async def test_list_filters_and_pages_newest_first(self, store: Store) -> None:
        """Listing filters by state, task and queue, newest first, and pages without gaps."""
        made = await store.enqueue([new_job("a") for _ in range(7)] + [new_job("b", queue="q")])
        page = await store.list(JobFilter(tasks=("a",)), limit=3)
        seen = [j.id for j in page.jobs]
        while page.next_cursor:
            page = await store.list(JobFilter(tasks=("a",)), limit=3, cursor=page.next_cursor)
            seen += [j.id for j in page.jobs]
        assert [r.id for r in reversed(made[:7])] == seen
        only_q = await store.list(JobFilter(queues=("q",)), limit=10)
        assert [made[7].id] == [j.id for j in only_q.jobs]
        assert only_q.next_cursor is None
        running = await store.list(JobFilter(states=(JobState.RUNNING,)), limit=10)
        assert [] == running.jobs

    async def test_counts_by_queue_and_state(self, store: Store) -> None:
        """Counts group jobs by queue and state."""
        await store.enqueue([new_job(queue="a"), new_job(queue="a"), new_job(queue="b")])
        await store.claim(ClaimRequest("w", TTL, 1, ["b"]))
        counts = await store.counts()
        assert 2 == counts[("a", JobState.QUEUED)]
        assert 1 == counts[("b", JobState.RUNNING)]

    async def test_next_run_at_is_none_when_empty(self, store: Store) -> None:
        """With nothing queued there is no next run time."""
        assert await store.next_run_at(None) is None

    async def test_next_run_at_follows_the_queues_asked(self, store: Store) -> None:
        """The earliest queued job of the queues asked about, due or not; cancelled and
        claimed jobs no longer count."""
        [a] = await store.enqueue([new_job(queue="a", delay=50)])
        [b] = await store.enqueue([new_job(queue="b", delay=100)])
        [c] = await store.enqueue([new_job(queue="c")])
        for queues, want in ((["a"], a.run_at), (["b"], b.run_at), (["b", "a"], a.run_at)):
            due = await store.next_run_at(queues)
            assert due is not None
            assert abs(due - want) < 0.001
        due = await store.next_run_at(None)
        assert due is not None
        assert abs(due - c.run_at) < 0.001
        assert await store.next_run_at(["elsewhere"]) is None
        await store.cancel(a.id)
        assert await store.next_run_at(["a"]) is None
        [claimed] = await store.claim(ClaimRequest("w", TTL, 1, ["c"]))
        assert c.id == claimed.id
        due = await store.next_run_at(None)
        assert due is not None
        assert abs(due - b.run_at) < 0.001

    async def test_reaper_sees_every_claim_of_a_job(self, store: Store) -> None:
        """Each claim's lease is reaped when it lapses, the second claim's too; a job
        finished in time is left alone."""
        [job] = await store.enqueue([new_job(max_attempts=3)])
        [kept] = await store.enqueue([new_job(queue="k", max_attempts=3)])
        for worker in ("w1", "w2"):
            [claimed] = await store.claim(ClaimRequest(worker, 0.05, 1, ["default"]))
            assert job.id == claimed.id
            await asyncio.sleep(0.1)
            assert 1 == await store.requeue_expired()
        [other] = await store.claim(ClaimRequest("w3", 0.05, 1, ["k"]))
        assert kept.id == other.id
        assert [True] == await store.complete([done(kept.id, "w3", attempt=1)])
        [last] = await store.claim(ClaimRequest("w4", TTL, 1, ["default"]))
        assert (job.id, 3) == (last.id, last.attempt)
        await asyncio.sleep(0.1)
        assert 0 == await store.requeue_expired()
