"""Redis: workflows beyond the conformance suite: a callback released once however its
inputs arrive, steps in two queues, counts kept through a failure and a retry, waiting
steps listed as queued, results spliced as text, and ordinary jobs with no step fields."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from offload.errors import QueueFull, StoreUnavailable
from offload.records import STEP_CANCELLED, JobLimits, JobState, WaitingReason
from offload.stores import ClaimRequest, JobFilter, open_store
from offload.stores.base import NewJob, Outcome, OutcomeKind, Takes
from offload.stores.redis import RedisStore
from offload.testing.conformance_workflows import Graph, chain3, claim, failed
from offload.testing.inputs import TTL, done, new_job
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    await drop_redis_keys(name)


async def opened(prefix: str) -> RedisStore:
    store = open_store(f"{REDIS_URL}?prefix={prefix}&op_timeout=2")
    assert isinstance(store, RedisStore)
    try:
        await store.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    return store


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    made = await opened(prefix)
    try:
        yield made
    finally:
        await made.close()


def chord(members: int, queue: str = "default") -> tuple[Graph, list[str], str]:
    g = Graph()
    ids = [g.step("t.m", args=f"[{n}]", queue=queue) for n in range(members)]
    callback = g.step("t.cb", Takes.ALL, queue=queue)
    for member in ids:
        g.edge(member, callback)
    return g, ids, callback


async def tallies(store: RedisStore, ids: list[str]) -> Counter[tuple[str, JobState]]:
    out: Counter[tuple[str, JobState]] = Counter()
    for job_id in ids:
        record = await store.get(job_id)
        assert record is not None
        out[(record.queue, record.state)] += 1
    return out


class TestRelease:
    async def test_inputs_completed_in_one_call_release_the_callback_once(
        self, store: RedisStore
    ) -> None:
        """Both members' successes in one script call fill both slots; the callback is
        released by the second and runs once, with the results in slot order."""
        g, members, callback = chord(2)
        await store.enqueue(g.built(callback))
        assert sorted(members) == sorted(await claim(store))
        await store.complete(
            [done(members[1], "w", result='"b"'), done(members[0], "w", result='"a"')]
        )
        claimed = await store.claim(ClaimRequest("w", TTL, 10))
        assert [(callback, [["a", "b"]])] == [(j.id, json.loads(j.args)) for j in claimed]
        assert [] == await claim(store)

    async def test_inputs_completed_by_two_processes_at_once_release_it_once(
        self, store: RedisStore, prefix: str
    ) -> None:
        """Two stores (two connections) completing the two members at the same moment:
        scripts run one at a time, so exactly one of them releases the callback."""
        other = await opened(prefix)
        try:
            for _ in range(10):
                g, members, callback = chord(2)
                await store.enqueue(g.built(callback))
                assert sorted(members) == sorted(await claim(store))
                await asyncio.gather(
                    store.complete([done(members[0], "w", result="1")]),
                    other.complete([done(members[1], "w", result="2")]),
                )
                claimed = await store.claim(ClaimRequest("w", TTL, 10))
                assert [(callback, [[1, 2]])] == [(j.id, json.loads(j.args)) for j in claimed]
                await store.complete([done(callback, "w")])
        finally:
            await other.close()

    async def test_results_are_spliced_as_text(self, store: RedisStore) -> None:
        """An integer past a double's precision reaches the next step unchanged, and a
        step with arguments of its own keeps them after the input."""
        g = Graph()
        a, b = g.step("t.a"), g.step("t.b", args='[1, {"x": []}]')
        g.edge(a, b)
        await store.enqueue(g.built(b))
        await claim(store)
        await store.complete([done(a, "w", result="12345678901234567890")])
        [got] = await store.claim(ClaimRequest("w", TTL, 10))
        assert [12345678901234567890, 1, {"x": []}] == json.loads(got.args)

    async def test_a_step_waiting_for_a_later_due_time_stays_delayed(
        self, store: RedisStore
    ) -> None:
        """Released before its own due time, a step waits for it in the delayed set."""
        g = Graph()
        a, b = g.step("t.a"), g.step("t.b", delay=30.0)
        g.edge(a, b)
        await store.enqueue(g.built(b))
        await claim(store)
        await store.complete([done(a, "w")])
        assert [] == await claim(store)
        record = await store.get(b)
        assert record is not None
        assert (JobState.QUEUED, None) == (record.state, record.waiting_reason)
        assert record.run_at > await store.now() + 20


class TestQueues:
    async def test_a_workflow_spanning_two_queues_moves_on_and_counts_stay_right(
        self, store: RedisStore
    ) -> None:
        """A chain from one queue into another (one server): the second step runs in its
        own queue, and each queue's counts match its jobs at every point."""
        g = Graph()
        a = g.step("t.a", queue="one")
        b = g.step("t.b", queue="two")
        c = g.step("t.c", queue="one")
        g.edge(a, b)
        g.edge(b, c)
        ids = [a, b, c]
        await store.enqueue(g.built(c))
        assert dict(await tallies(store, ids)) == await store.counts()
        assert [] == [j.id for j in await store.claim(ClaimRequest("w", TTL, 10, ["two"]))]
        [first] = await store.claim(ClaimRequest("w", TTL, 10, ["one"]))
        await store.complete([done(first.id, "w", result="1")])
        [second] = await store.claim(ClaimRequest("w", TTL, 10, ["two"]))
        assert (b, [1]) == (second.id, json.loads(second.args))
        await store.complete([failed(b)])
        assert dict(await tallies(store, ids)) == await store.counts()
        cancelled = await store.get(c)
        assert cancelled is not None
        assert JobState.CANCELLED is cancelled.state
        await store.retry(c)
        assert dict(await tallies(store, ids)) == await store.counts()
        [again] = await store.claim(ClaimRequest("w", TTL, 10, ["two"]))
        await store.complete([done(b, "w", attempt=again.attempt, result="2")])
        [last] = await store.claim(ClaimRequest("w", TTL, 10, ["one"]))
        assert (c, [2]) == (last.id, json.loads(last.args))
        await store.complete([done(c, "w")])
        assert {("one", JobState.SUCCEEDED): 2, ("two", JobState.SUCCEEDED): 1} == (
            await store.counts()
        )
        assert [a, b, c] == [r.id for r in await store.steps(c)]


class TestKeys:
    async def test_waiting_steps_are_listed_as_queued(self, store: RedisStore) -> None:
        """A waiting step is in its queue's held set, which listing by state reads."""
        g, members, callback = chord(2)
        await store.enqueue(g.built(callback))
        page = await store.list(JobFilter(states=(JobState.QUEUED,)), 10)
        listed = {r.id: r.waiting_reason for r in page.jobs}
        assert {members[0]: None, members[1]: None, callback: WaitingReason.INPUTS} == listed

    async def test_an_ordinary_job_has_no_step_fields_and_no_workflow_key(
        self, store: RedisStore, prefix: str
    ) -> None:
        """Jobs of no workflow write what they wrote before workflows."""
        [job] = await store.enqueue([new_job("t.plain")])
        await claim(store)
        await store.complete([done(job.id, "w")])
        client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            fields = await client.hkeys(f"{{{prefix}:q:default}}:job:{job.id}")
            workflow_keys = [k async for k in client.scan_iter(match=f"*{prefix}*:wf:*")]
        finally:
            await client.aclose()
        assert not {"wf", "waits", "takes", "feeds", "on_error"} & set(fields)
        assert [] == workflow_keys

    async def test_a_purge_removes_the_workflows_hash_with_its_steps(
        self, store: RedisStore, prefix: str
    ) -> None:
        g = Graph()
        a, b = g.step("t.a"), g.step("t.b")
        g.edge(a, b)
        await store.enqueue(g.built(b))
        for job_id in (a, b):
            await claim(store)
            await store.complete([done(job_id, "w")])
        assert 2 == await store.purge(await store.now() + 1)
        client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert 0 == await client.exists(f"{{{prefix}:q:default}}:wf:{b}")
        finally:
            await client.aclose()
        assert [] == await store.steps(b)


class TestEnqueue:
    async def test_a_key_reserved_for_a_job_never_written_gives_the_workflow_its_id(
        self, store: RedisStore, prefix: str
    ) -> None:
        """A caller that died between reserving the last step's key and writing: the next
        call's workflow is stored under the id the key names, and moves on as any."""
        g, a, b, c = chain3()
        orphan = new_job("t.c").id
        client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            await client.set(f"{prefix}:key:3:t.c:order-9", f"default\x00{orphan}")
        finally:
            await client.aclose()
        records = await store.enqueue(g.built(c, key="order-9"))
        assert [a, b, orphan] == [r.id for r in records]
        assert {"workflow": orphan} == records[0].meta
        assert [a, b, orphan] == [r.id for r in await store.steps(orphan)]
        for job_id, result in ((a, "1"), (b, "2")):
            await claim(store)
            await store.complete([done(job_id, "w", result=result)])
        [last] = await store.claim(ClaimRequest("w", TTL, 10))
        assert (orphan, [2]) == (last.id, json.loads(last.args))
        again, _, _, again_c = chain3()
        assert [orphan] * 3 == [
            r.id for r in await store.enqueue(again.built(again_c, key="order-9"))
        ]

    async def test_capped_steps_are_weighed_and_a_refusal_stores_nothing(
        self, store: RedisStore
    ) -> None:
        """Steps of a task with a backlog limit count in it, the waiting ones too; a
        workflow past the limit stores nothing."""

        def capped(most: int) -> tuple[list[NewJob], list[str]]:
            g = Graph()
            ids = [g.step("t.capped") for _ in range(3)]
            g.edge(ids[0], ids[1])
            g.edge(ids[1], ids[2])
            limits = JobLimits(max_queued=most)
            return [dataclasses.replace(j, limits=limits) for j in g.built(ids[2])], ids

        jobs, ids = capped(2)
        with pytest.raises(QueueFull):
            await store.enqueue(jobs)
        assert [None, None, None] == [await store.get(j) for j in ids]
        assert {} == await store.counts()
        jobs, ids = capped(3)
        await store.enqueue(jobs)
        assert {"task:t.capped": 3} == await store.queued_depths(["t.capped"], [])
        await claim(store)
        await store.complete([failed(ids[0])])
        assert {"task:t.capped": 0} == await store.queued_depths(["t.capped"], [])

    async def test_a_step_released_unstarted_after_a_cancel_request_cancels_what_follows(
        self, store: RedisStore
    ) -> None:
        """A step claimed ahead whose cancellation was asked for ends cancelled when its
        worker gives it back unstarted, and the steps after it end cancelled too."""
        g, a, b, c = chain3()
        await store.enqueue(g.built(c))
        [claimed] = await store.claim(ClaimRequest("w", TTL, 10))
        await store.cancel(a)
        await store.complete([Outcome(a, "w", claimed.attempt, OutcomeKind.RELEASE)])
        after = await store.get(c)
        assert after is not None
        assert after.error is not None
        assert (JobState.CANCELLED, STEP_CANCELLED) == (after.state, after.error.type)
        states = [await store.get(j) for j in (a, b, c)]
        assert [JobState.CANCELLED] * 3 == [r.state for r in states if r is not None]
