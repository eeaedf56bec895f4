"""Workflows on PostgreSQL where the conformance suite cannot reach: the members of a chord
finishing at once in several stores (each a pool of its own, as in separate worker
processes) release the callback once, with every result; an outcome sent by a store that
did not claim the step still moves the workflow on; and a keyed workflow enqueued by two
stores at once is stored once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import cast

import pytest

from offload.records import JobState, WaitingReason
from offload.stores import ClaimRequest
from offload.stores.base import Takes
from offload.stores.postgres import PostgresStore
from offload.testing.conformance_workflows import Graph, chain3
from offload.testing.inputs import TTL, done
from tests.stores.conftest import postgres_stores

pytestmark = pytest.mark.asyncio

STORES = 4
MEMBERS = 8


@pytest.fixture
async def stores() -> AsyncIterator[list[PostgresStore]]:
    async with postgres_stores(STORES) as opened:
        yield cast(list[PostgresStore], opened)


class TestChordMembersAtOnce:
    @pytest.mark.parametrize("round_", range(5))
    async def test_the_callback_is_released_once_with_every_result(
        self, stores: list[PostgresStore], round_: int
    ) -> None:
        """Each store claims members of one chord and all of them complete at once, one
        outcome per call: exactly one of those calls takes the callback's count to 0, and
        the callback runs once, with the results in member order."""
        g = Graph()
        members = [g.step("t.m", args=f"[{n}]") for n in range(MEMBERS)]
        callback = g.step("t.cb", Takes.ALL)
        for member in members:
            g.edge(member, callback)
        await stores[0].enqueue(g.built(callback))
        claimed: list[tuple[PostgresStore, str, int]] = []
        for i, store in enumerate(stores):
            for job in await store.claim(ClaimRequest(f"w{i}", TTL, MEMBERS // STORES)):
                claimed.append((store, job.id, job.attempt))
        assert sorted(members) == sorted(j for _, j, _ in claimed)
        order = {m: n for n, m in enumerate(members)}
        await asyncio.gather(
            *(
                store.complete(
                    [done(job_id, f"w{stores.index(store)}", attempt, f'"r{order[job_id]}"')]
                )
                for store, job_id, attempt in claimed
            )
        )
        got = []
        for i, store in enumerate(stores):
            got += await store.claim(ClaimRequest(f"w{i}", TTL, 10))
        assert [callback] == [j.id for j in got]
        assert [[f"r{n}" for n in range(MEMBERS)]] == json.loads(got[0].args)


class TestOutcomeFromAnotherStore:
    async def test_a_step_completed_by_a_store_that_did_not_claim_it_moves_on(
        self, stores: list[PostgresStore]
    ) -> None:
        """The usual outcome statement leaves steps out; the store that sends it finds the
        step among the outcomes not applied and applies it with its workflow's rules."""
        g, a, b, c = chain3()
        await stores[0].enqueue(g.built(c))
        [job] = await stores[0].claim(ClaimRequest("w", TTL, 10))
        assert a == job.id
        assert [True] == await stores[1].complete([done(a, "w", result='{"n": 3}')])
        [got] = await stores[2].claim(ClaimRequest("w", TTL, 10))
        assert (b, [{"n": 3}, 2]) == (got.id, json.loads(got.args))

    async def test_a_fenced_outcome_of_a_step_is_still_refused(
        self, stores: list[PostgresStore]
    ) -> None:
        """An outcome of a worker that no longer holds the lease changes nothing, by either
        statement."""
        g, a, b, c = chain3()
        await stores[0].enqueue(g.built(c))
        await stores[0].claim(ClaimRequest("w", TTL, 10))
        assert [False] == await stores[1].complete([done(a, "other", result="1")])
        waiting = await stores[0].get(b)
        assert waiting is not None
        assert (JobState.QUEUED, WaitingReason.INPUTS) == (waiting.state, waiting.waiting_reason)


class TestKeyedWorkflowAtOnce:
    async def test_two_stores_enqueueing_one_keyed_workflow_store_it_once(
        self, stores: list[PostgresStore]
    ) -> None:
        """The second insert of the last step finds the key taken; the steps it wrote
        before are deleted in its transaction, and every position returns the first."""
        graphs = [chain3() for _ in stores]
        results = await asyncio.gather(
            *(
                store.enqueue(g.built(last, key="order-9"))
                for store, (g, _, _, last) in zip(stores, graphs, strict=True)
            )
        )
        winners = {records[-1].id for records in results}
        assert 1 == len(winners)
        [winner] = winners
        for records, (_, first, second, last) in zip(results, graphs, strict=True):
            expected = [first, second, last] if last == winner else [winner] * 3
            assert expected == [r.id for r in records]
        assert 3 == len(await stores[0].steps(winner))
        for _, first, _, last in graphs:
            if last != winner:
                assert await stores[0].get(first) is None
        # Only the winner's first step is runnable.
        assert 1 == len(await stores[0].claim(ClaimRequest("w", TTL, 10)))


class TestRetryAfterALateInput:
    async def test_a_step_cancelled_before_its_input_came_gets_it_when_retried(
        self, stores: list[PostgresStore]
    ) -> None:
        """A step cancelled while it waited keeps the result that comes in afterwards, and
        a retry of the workflow hands it over: it runs with its input, not without."""
        store = stores[0]
        g, a, b, c = chain3()
        await store.enqueue(g.built(c))
        [job] = await store.claim(ClaimRequest("w", TTL, 10))
        await store.cancel(b)
        assert [True] == await store.complete([done(a, "w", job.attempt, "1")])
        assert JobState.CANCELLED is (await store.get(c) or job).state
        await store.retry(c)
        [again] = await store.claim(ClaimRequest("w", TTL, 10))
        assert (b, [1, 2]) == (again.id, json.loads(again.args))
        last = await store.get(c)
        assert last is not None
        assert (JobState.QUEUED, WaitingReason.INPUTS) == (last.state, last.waiting_reason)
