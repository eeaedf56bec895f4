"""The conformance suite's tests of workflows (``Workflows``): steps stored with their
edges, released by the store when their inputs succeed, cancelled when a step before
them fails, and resumed by a retry. An optional capability: a store without it skips
them, and offload refuses workflows on it.
``StoreConformance`` inherits them; see ``offload.testing.conformance``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from offload.records import STEP_CANCELLED, STEP_FAILED, JobError, JobState, WaitingReason
from offload.stores.base import (
    ClaimRequest,
    NewJob,
    Outcome,
    OutcomeKind,
    StepLink,
    Store,
    Takes,
    Workflows,
)
from offload.testing.inputs import TTL, done, new_job


def workflows(store: Store) -> Workflows:
    if not isinstance(store, Workflows):
        pytest.skip(
            f"{type(store).__name__} keeps no workflows (steps, and step links in enqueue): "
            "an optional capability, so offload refuses workflows on it"
        )
    return store


class Graph:
    """A workflow's jobs built by hand, as ``offload.workflows`` builds them: ``edge``
    links a step to the one its result feeds, in slot order."""

    def __init__(self) -> None:
        self.jobs: list[NewJob] = []
        self.links: dict[str, dict[str, object]] = {}

    def step(self, task: str = "t", takes: Takes = Takes.ONE, **fields: object) -> str:
        job = new_job(task, **fields)  # type: ignore[arg-type]
        self.jobs.append(job)
        self.links[job.id] = {"inputs": 0, "takes": takes, "feeds": []}
        return job.id

    def edge(self, before: str, after: str) -> None:
        link = self.links[after]
        slot = link["inputs"]
        assert isinstance(slot, int)
        link["inputs"] = slot + 1
        feeds = self.links[before]["feeds"]
        assert isinstance(feeds, list)
        feeds.append((after, slot))

    def built(self, last: str, handler: str | None = None, key: str | None = None) -> list[NewJob]:
        out = []
        for job in self.jobs:
            link = self.links[job.id]
            inputs, takes, feeds = link["inputs"], link["takes"], link["feeds"]
            assert isinstance(inputs, int)
            assert isinstance(takes, Takes)
            assert isinstance(feeds, list)
            is_handler = job.id == handler
            step = StepLink(
                last,
                1 if is_handler else inputs,
                Takes.ERROR if is_handler else takes,
                tuple(feeds),
                None if is_handler else handler,
            )
            meta = {"workflow": last}
            out.append(
                dataclasses.replace(
                    job, step=step, meta=meta, key=key if job.id == last else job.key
                )
            )
        return out


async def claim(store: Store, n: int = 10) -> list[str]:
    return [j.id for j in await store.claim(ClaimRequest("w", TTL, n))]


async def state(store: Store, job_id: str) -> JobState:
    record = await store.get(job_id)
    assert record is not None
    return record.state


def failed(job_id: str, attempt: int = 1) -> Outcome:
    error = JobError("ValueError", "boom")
    return Outcome(job_id, "w", attempt, OutcomeKind.FAILED, error=error)


def chain3() -> tuple[Graph, str, str, str]:
    g = Graph()
    a, b, c = g.step("t.a", args="[1]"), g.step("t.b", args="[2]"), g.step("t.c")
    g.edge(a, b)
    g.edge(b, c)
    return g, a, b, c


@pytest.mark.asyncio
class WorkflowConformance:
    """Steps wait for their inputs, get their results, and failures stop what follows."""

    async def test_a_step_waits_for_its_input_and_gets_its_result_first(self, store: Store) -> None:
        workflows(store)
        g, a, b, c = chain3()
        records = await store.enqueue(g.built(c))
        assert [a, b, c] == [r.id for r in records]
        assert [a] == await claim(store)  # b and c wait
        held = await store.get(b)
        assert held is not None
        assert (JobState.QUEUED, WaitingReason.INPUTS) == (held.state, held.waiting_reason)
        assert held.run_at <= await store.now() + 1  # its own due time, not the far one
        await store.complete([done(a, "w", result='{"n": 3}')])
        [got] = await store.claim(ClaimRequest("w", TTL, 10))
        assert (b, [{"n": 3}, 2]) == (got.id, json.loads(got.args))
        await store.complete([done(b, "w", result="5")])
        [last] = await store.claim(ClaimRequest("w", TTL, 10))
        assert (c, [5]) == (last.id, json.loads(last.args))
        await store.complete([done(c, "w", result="6")])
        assert [JobState.SUCCEEDED] * 3 == [await state(store, j) for j in (a, b, c)]

    async def test_a_callback_gets_every_result_in_slot_order(self, store: Store) -> None:
        workflows(store)
        g = Graph()
        members = [g.step("t.m", args=f"[{n}]") for n in range(4)]
        callback = g.step("t.cb", Takes.ALL, kwargs='{"k": 1}')
        for member in members:
            g.edge(member, callback)
        await store.enqueue(g.built(callback))
        assert sorted(members) == sorted(await claim(store))
        for n in (3, 0, 2, 1):  # finished out of order, one batch each
            await store.complete([done(members[n], "w", result=f'"r{n}"')])
        [got] = await store.claim(ClaimRequest("w", TTL, 10))
        assert callback == got.id
        assert ([["r0", "r1", "r2", "r3"]], {"k": 1}) == (
            json.loads(got.args),
            json.loads(got.kwargs),
        )

    async def test_an_immutable_step_waits_but_takes_nothing(self, store: Store) -> None:
        workflows(store)
        g = Graph()
        a, b = g.step("t.a"), g.step("t.b", Takes.NONE, args='["own"]')
        g.edge(a, b)
        await store.enqueue(g.built(b))
        await claim(store)
        await store.complete([done(a, "w", result="1")])
        [got] = await store.claim(ClaimRequest("w", TTL, 10))
        assert ["own"] == json.loads(got.args)

    async def test_a_failed_step_cancels_what_follows_and_runs_the_handler(
        self, store: Store
    ) -> None:
        workflows(store)
        g, a, b, c = chain3()
        handler = g.step("t.on_error", args='["extra"]')
        await store.enqueue(g.built(c, handler))
        await claim(store)
        await store.complete([done(a, "w", result="1")])
        await claim(store)
        await store.complete([failed(b)])
        last = await store.get(c)
        assert last is not None
        assert last.error is not None
        assert (JobState.CANCELLED, STEP_FAILED) == (last.state, last.error.type)
        assert "'t.b'" in last.error.message
        assert b in last.error.message
        [got] = await store.claim(ClaimRequest("w", TTL, 10))
        assert (handler, [b, "extra"]) == (got.id, json.loads(got.args))

    async def test_a_workflow_that_succeeds_cancels_its_handler(self, store: Store) -> None:
        workflows(store)
        g = Graph()
        a = g.step("t.a")
        handler = g.step("t.on_error")
        await store.enqueue(g.built(a, handler))
        assert [a] == await claim(store)
        await store.complete([done(a, "w")])
        assert JobState.CANCELLED is await state(store, handler)
        assert [] == await claim(store)

    async def test_cancelling_the_workflow_cancels_every_step_not_finished(
        self, store: Store
    ) -> None:
        workflows(store)
        g = Graph()
        a, b = g.step("t.a"), g.step("t.b")
        c = g.step("t.c", Takes.ALL)
        g.edge(a, c)
        g.edge(b, c)
        await store.enqueue(g.built(c))
        await store.claim(ClaimRequest("w", TTL, 1))  # a runs; b is queued
        await store.cancel(c)
        running = await store.get(a)
        assert running is not None
        assert (JobState.RUNNING, True) == (running.state, running.cancel_requested)
        assert [JobState.CANCELLED] * 2 == [await state(store, j) for j in (b, c)]
        assert [] == await claim(store)

    async def test_cancelling_a_step_cancels_what_follows_it(self, store: Store) -> None:
        workflows(store)
        g, a, b, c = chain3()
        await store.enqueue(g.built(c))
        await store.cancel(a)
        after = await store.get(c)
        assert after is not None
        assert after.error is not None
        assert (JobState.CANCELLED, STEP_CANCELLED) == (after.state, after.error.type)
        assert [JobState.CANCELLED] * 3 == [await state(store, j) for j in (a, b, c)]

    async def test_a_retry_resumes_from_the_failed_step(self, store: Store) -> None:
        workflows(store)
        g, a, b, c = chain3()
        await store.enqueue(g.built(c))
        await claim(store)
        await store.complete([done(a, "w", result="1")])
        await claim(store)
        await store.complete([failed(b)])
        await store.retry(c)  # the workflow's id: its failed step runs again
        assert JobState.SUCCEEDED is await state(store, a)  # kept, not run again
        waiting = await store.get(c)
        assert waiting is not None
        assert (JobState.QUEUED, WaitingReason.INPUTS) == (waiting.state, waiting.waiting_reason)
        [again] = await store.claim(ClaimRequest("w", TTL, 10))
        assert (b, [1, 2]) == (again.id, json.loads(again.args))
        await store.complete([done(b, "w", attempt=again.attempt, result="7")])
        [last] = await store.claim(ClaimRequest("w", TTL, 10))
        assert (c, [7]) == (last.id, json.loads(last.args))

    async def test_a_lapsed_last_lease_fails_the_step_and_what_follows(self, store: Store) -> None:
        workflows(store)
        g = Graph()
        a, b = g.step("t.a", max_attempts=1), g.step("t.b")
        g.edge(a, b)
        await store.enqueue(g.built(b))
        await store.claim(ClaimRequest("w", 0.05, 10))
        for _ in range(100):
            if await store.requeue_expired():
                break
            await asyncio.sleep(0.02)
        assert JobState.FAILED is await state(store, a)
        assert JobState.CANCELLED is await state(store, b)

    async def test_a_workflow_whose_key_is_on_record_adds_nothing(self, store: Store) -> None:
        control = workflows(store)
        g, _, _, c = chain3()
        await store.enqueue(g.built(c, key="order-1"))
        again, _, again_c, again_last = chain3()
        records = await store.enqueue(again.built(again_last, key="order-1"))
        assert [c] * 3 == [r.id for r in records]
        assert await store.get(again_c) is None
        assert 3 == len(await control.steps(c))

    async def test_steps_lists_the_workflow_in_order(self, store: Store) -> None:
        control = workflows(store)
        g, a, b, c = chain3()
        await store.enqueue([new_job("t.other"), *g.built(c)])
        listed = await control.steps(c)
        assert [a, b, c] == [r.id for r in listed]
        assert [JobState.QUEUED] * 3 == [r.state for r in listed]
        assert [None, WaitingReason.INPUTS, WaitingReason.INPUTS] == [
            r.waiting_reason for r in listed
        ]
