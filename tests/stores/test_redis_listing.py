"""Redis: a listing by state gives the same pages whichever way each queue's states are read,
from their own sets (small states) or by walking every id (large ones), and both at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from offload.errors import StoreUnavailable
from offload.records import JobError, JobState
from offload.stores import ClaimRequest, JobFilter, Outcome, OutcomeKind, open_store
from offload.stores.redis import RedisStore, scan
from offload.testing.conformance_listing import job_at, listed, newest_first
from offload.testing.inputs import TTL, done
from tests.stores.conftest import REDIS_URL, drop_redis_keys, redis_unreachable

_BASE = 1_700_000_000.0


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    prefix = f"test-{uuid.uuid4().hex}"
    opened = open_store(f"{REDIS_URL}?prefix={prefix}&op_timeout=2")
    assert isinstance(opened, RedisStore)
    try:
        await opened.open()
    except StoreUnavailable as exc:
        redis_unreachable(exc)
    try:
        yield opened
    finally:
        await opened.close()
        await drop_redis_keys(prefix)


@pytest.mark.parametrize("index_max", [0, 3, 8, 50_000])
async def test_state_listings_agree_whatever_the_index_size_limit(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch, index_max: int
) -> None:
    """0 walks every id for every state, 50,000 reads every state's sets, 3 and 8 mix the
    two within a queue; each lists the same jobs in the same pages."""
    monkeypatch.setattr(scan, "INDEX_MAX", index_max)
    jobs = [job_at(_BASE + i / 10, "a" if i % 3 else "b", queue=f"m{i % 2}") for i in range(60)]
    await store.enqueue(jobs)
    for job in jobs[5:60:11]:
        await store.cancel(job.id)
    claimed = await store.claim(ClaimRequest("w", TTL, 24, ["m0", "m1"]))
    err = JobError("RuntimeError", "boom")
    outcomes = [Outcome(j.id, "w", 1, OutcomeKind.FAILED, error=err) for j in claimed[:6]]
    outcomes += [done(j.id, "w") for j in claimed[6:18]]
    assert [True] * 18 == await store.complete(outcomes)
    state = {j.id: j.state for j in [await store.get(j.id) for j in jobs] if j is not None}
    assert len(state) == len(jobs)
    every = list(JobState)
    for states in [(s,) for s in every] + [tuple(every), (JobState.QUEUED, JobState.RUNNING)]:
        for flt in (
            JobFilter(states=states),
            JobFilter(states=states, tasks=("a",), enqueued_after=_BASE + 1),
            JobFilter(states=states, queues=("m1",), enqueued_before=_BASE + 4),
        ):
            want = [
                j
                for j in jobs
                if state[j.id] in states
                and (not flt.tasks or j.task in flt.tasks)
                and (not flt.queues or j.queue in flt.queues)
                and (flt.enqueued_after is None or j.id >= _floor(flt.enqueued_after))
                and (flt.enqueued_before is None or j.id < _floor(flt.enqueued_before))
            ]
            for limit in (1, 4, 100):
                assert newest_first(want) == await listed(store, flt, limit), (flt, limit)


def _floor(at: float) -> str:
    h = f"{round(at * 1000):012x}"
    return f"{h[:8]}-{h[8:]}-0000-0000-000000000000"
