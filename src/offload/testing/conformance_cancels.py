"""The conformance suite's tests of cancel signals (``CancelSignals``): a cancel of a
running job reaches the worker that runs it at once, through ``cancel_requests``, not at
its next heartbeat; each request once, and to that worker only. An optional capability: a
store without it skips them, and its workers rely on the heartbeat.
``StoreConformance`` inherits them; see ``offload.testing.conformance``.
"""

from __future__ import annotations

import asyncio

import pytest

from offload.records import JobRecord
from offload.stores.base import CancelSignals, ClaimRequest, Store, Workflows
from offload.testing.conformance_workflows import Graph
from offload.testing.inputs import TTL, new_job

# Far longer than any store takes, so that a request that arrives at all arrives in it;
# a call that returns empty after it has missed the request.
HEARD_WITHIN = 10.0
# How long a call that must hear nothing is given to hear something.
SILENCE = 0.5


def signals(store: Store) -> CancelSignals:
    if not isinstance(store, CancelSignals):
        pytest.skip(
            f"{type(store).__name__} sends no cancel signals (cancel_requests): an optional "
            "capability, so its workers learn of cancellations from the heartbeat"
        )
    return store


async def running(store: Store, worker: str, task: str = "t.cancel") -> JobRecord:
    (job,) = await store.enqueue([new_job(task)])
    (claimed,) = await store.claim(ClaimRequest(worker, TTL, 1))
    assert job.id == claimed.id
    return claimed


@pytest.mark.asyncio
class CancelSignalsConformance:
    """Cancels of running jobs reach their workers without waiting for a heartbeat."""

    async def test_a_waiting_worker_hears_a_cancel_of_its_job(self, store: Store) -> None:
        """A worker blocked in cancel_requests returns with the job's id once it is
        cancelled (long before the timeout, which it would otherwise run out)."""
        s = signals(store)
        await s.cancel_requests("w-a", 0.0)
        job = await running(store, "w-a")
        listening = asyncio.create_task(s.cancel_requests("w-a", HEARD_WITHIN))
        await asyncio.sleep(0.05)
        await store.cancel(job.id)
        assert {job.id} == await listening

    async def test_a_cancel_between_two_calls_is_told_by_the_next(self, store: Store) -> None:
        """A request that arrives while the worker is not in a call is not lost: the next
        call reports it."""
        s = signals(store)
        await s.cancel_requests("w-a", 0.0)
        job = await running(store, "w-a")
        await store.cancel(job.id)
        assert {job.id} == await s.cancel_requests("w-a", HEARD_WITHIN)

    async def test_each_request_is_told_once(self, store: Store) -> None:
        """Once reported, a request is not reported again while the job still runs, so a
        worker's loop of calls does not spin on it."""
        s = signals(store)
        await s.cancel_requests("w-a", 0.0)
        job = await running(store, "w-a")
        await store.cancel(job.id)
        assert {job.id} == await s.cancel_requests("w-a", HEARD_WITHIN)
        assert set() == await s.cancel_requests("w-a", SILENCE)

    async def test_only_the_worker_running_the_job_hears_it(self, store: Store) -> None:
        """Another worker's call stays silent; the job's own worker hears it."""
        s = signals(store)
        await s.cancel_requests("w-a", 0.0)
        await s.cancel_requests("w-b", 0.0)
        job = await running(store, "w-a")
        other = asyncio.create_task(s.cancel_requests("w-b", SILENCE))
        await asyncio.sleep(0.05)
        await store.cancel(job.id)
        assert {job.id} == await s.cancel_requests("w-a", HEARD_WITHIN)
        assert set() == await other

    async def test_a_cancel_of_a_queued_job_is_told_to_no_one(self, store: Store) -> None:
        """A queued job ends cancelled at once: no worker holds it, none is told."""
        s = signals(store)
        await s.cancel_requests("w-a", 0.0)
        await running(store, "w-a")
        (queued,) = await store.enqueue([new_job("t.queued")])
        await store.cancel(queued.id)
        assert set() == await s.cancel_requests("w-a", SILENCE)

    async def test_a_cancelled_workflow_tells_its_running_step(self, store: Store) -> None:
        """Cancelling a workflow by its id asks its running steps to stop, and their
        worker hears of it as of a job's own cancel."""
        s = signals(store)
        if not isinstance(store, Workflows):
            pytest.skip(f"{type(store).__name__} keeps no workflows")
        await s.cancel_requests("w-a", 0.0)
        graph = Graph()
        first = graph.step("t.first")
        last = graph.step("t.last")
        graph.edge(first, last)
        await store.enqueue(graph.built(last))
        (claimed,) = await store.claim(ClaimRequest("w-a", TTL, 1))
        assert first == claimed.id
        await store.cancel(last)
        assert {first} == await s.cancel_requests("w-a", HEARD_WITHIN)
