"""SQLite workflow edges beyond the conformance suite: a step claimed ahead and released
cancelled cancels what follows, and a step cancelled while it waited gets its inputs when
a retry resumes it after they came in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offload.records import JobState
from offload.stores.base import ClaimRequest, Outcome, OutcomeKind, Takes
from offload.stores.sqlite import SQLiteStore
from offload.testing.conformance_workflows import Graph
from offload.testing.inputs import TTL, done


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await s.open()
    yield s
    await s.close()


async def test_a_released_step_that_ends_cancelled_cancels_what_follows(
    store: SQLiteStore,
) -> None:
    g = Graph()
    a, b = g.step("t.a"), g.step("t.b")
    g.edge(a, b)
    await store.enqueue(g.built(b))
    [claimed] = await store.claim(ClaimRequest("w", TTL, 1))
    await store.cancel(a)  # running: its cancel is asked for
    await store.complete([Outcome(a, "w", claimed.attempt, OutcomeKind.RELEASE)])
    after = await store.get(b)
    assert after is not None
    assert JobState.CANCELLED is after.state


async def test_a_step_cancelled_while_waiting_gets_its_inputs_on_retry(
    store: SQLiteStore,
) -> None:
    g = Graph()
    a, b = g.step("t.a"), g.step("t.b", Takes.ONE, args='["own"]')
    g.edge(a, b)
    await store.enqueue(g.built(b))
    [claimed] = await store.claim(ClaimRequest("w", TTL, 1))
    await store.cancel(b)  # the workflow's id: b is cancelled, a asked to stop
    await store.complete([done(a, "w", claimed.attempt, result="41")])  # it finished anyway
    await store.retry(b)
    [again] = await store.claim(ClaimRequest("w", TTL, 10))
    assert (b, [41, "own"]) == (again.id, json.loads(again.args))
