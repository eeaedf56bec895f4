"""Flow control on PostgreSQL where the conformance suite cannot reach: claims from several
stores at once (each a pool of its own, as in separate worker processes) never pass a
group's limit or spend a token twice, a claim holds a bucket's whole backlog at once, and
the reaper's pass releases held jobs that a lost release left behind."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from typing import cast

import psycopg
import pytest

from offload.records import JobLimits, JobState, WaitingReason
from offload.stores import ClaimRequest
from offload.stores.base import NewJob
from offload.stores.postgres import PostgresStore
from offload.testing.inputs import new_job
from tests.stores.conftest import (
    POSTGRES_URL,
    postgres_stores,
)

pytestmark = pytest.mark.asyncio

# Stores claiming at once: each has its own pool, so its claims run on connections of
# their own and meet the others' only in the server.
CLAIMERS = 4


@pytest.fixture
async def stores() -> AsyncIterator[list[PostgresStore]]:
    async with postgres_stores(CLAIMERS) as opened:
        yield cast(list[PostgresStore], opened)


def limited(limits: JobLimits) -> NewJob:
    return dataclasses.replace(new_job(), limits=limits)


async def claim_together(stores: list[PostgresStore], n: int = 5) -> list[str]:
    """One claim from every store, started at once."""
    batches = await asyncio.gather(
        *(s.claim(ClaimRequest(f"w{i}", 30.0, n)) for i, s in enumerate(stores))
    )
    return [job.id for batch in batches for job in batch]


class TestBacklog:
    async def test_a_claim_of_one_holds_a_whole_backlog_for_its_tokens(
        self, stores: list[PostgresStore]
    ) -> None:
        """A backlog queued at once is held in claim order by the first claim that meets
        it, each job due at its own token, however few jobs that claim asks for. Held
        claim round by claim round instead, the tokens of the first jobs held passed
        before the last round ended, at 1,000/s (benchmarks/flow_bench.py)."""
        store = stores[0]
        bucket = JobLimits(rate_key="t:backlog", rate=100.0, burst=1)
        jobs = [limited(bucket) for _ in range(300)]
        free = new_job()
        await store.enqueue([*jobs, free])
        began = await store.now()
        [first] = await store.claim(ClaimRequest("w", 30.0, 1))
        assert jobs[0].id == first.id
        held = [await store.get(j.id) for j in jobs[1:]]
        assert all(r is not None and r.waiting_reason is WaitingReason.RATE_LIMIT for r in held)
        dues = [r.run_at for r in held if r is not None]
        assert dues == sorted(dues)  # in claim order
        gaps = [b - a for a, b in itertools.pairwise(dues)]
        assert all(abs(g - 0.01) < 0.001 for g in gaps), (min(gaps), max(gaps))
        assert began < dues[0] <= began + 0.1
        # What no limit holds is claimed next, not behind the held backlog; with it may
        # come a held job whose token is in by now (those whose tokens went by while the
        # test read them are held again).
        ids = [j.id for j in await store.claim(ClaimRequest("w", 30.0, 5))]
        assert free.id == ids[0]
        assert len(ids) <= 3
        assert set(ids[1:]) <= {j.id for j in jobs}
        [usage] = await store.limit_usage(["t:backlog"])
        assert 299 - (len(ids) - 1) == usage.waiting


class TestConcurrentClaims:
    async def test_claims_at_once_fill_a_group_exactly(self, stores: list[PostgresStore]) -> None:
        """Every store claims from one group of limit 2 at the same moment, several
        rounds: two jobs run, no more (no two claims took the last slot) and no fewer
        (no claim held its jobs for another's that were held too)."""
        group = JobLimits(concurrency_key="t:g", concurrency=2)
        await stores[0].enqueue([limited(group) for _ in range(40)])
        claimed = await claim_together(stores)
        assert 2 == len(claimed)
        for _ in range(3):
            assert [] == await claim_together(stores)
        [usage] = await stores[0].limit_usage(["t:g"])
        assert (2, 38) == (usage.running, usage.waiting)

    async def test_claims_at_once_spend_each_token_once(self, stores: list[PostgresStore]) -> None:
        """A bucket of burst 3 at a slow rate gives three jobs to all the claims together."""
        bucket = JobLimits(rate_key="t:b", rate=0.01, burst=3)
        await stores[0].enqueue([limited(bucket) for _ in range(20)])
        assert 3 == len(await claim_together(stores))
        assert [] == await claim_together(stores)

    async def test_jobs_without_limits_go_on_beside_a_full_group(
        self, stores: list[PostgresStore]
    ) -> None:
        """Claims of unlimited jobs are not held up by a group's lock or limit."""
        group = JobLimits(concurrency_key="t:full", concurrency=1)
        await stores[0].enqueue([limited(group) for _ in range(3)])
        await stores[0].enqueue([new_job() for _ in range(12)])
        assert 13 == len(await claim_together(stores))


class TestRelease:
    async def test_the_reapers_pass_releases_what_a_lost_release_left(
        self, stores: list[PostgresStore]
    ) -> None:
        """A running job of a group that ended without its release (here: ended by hand)
        leaves its held job waiting only until the next reaper pass."""
        store = stores[0]
        group = JobLimits(concurrency_key="t:lost", concurrency=1)
        jobs = [limited(group) for _ in range(2)]
        await store.enqueue(jobs)
        [first] = await store.claim(ClaimRequest("w", 30.0, 5))
        held = await store.get(jobs[1].id)
        assert held is not None
        assert WaitingReason.CONCURRENCY is held.waiting_reason
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
        async with conn:
            await conn.execute(
                f"UPDATE {store.opts.quoted_schema}.offload_jobs SET state = 'succeeded', "
                "finished_at = now() WHERE id = %s",
                (first.id,),
            )
        assert [] == await store.claim(ClaimRequest("w", 30.0, 5))
        assert 0 == await store.requeue_expired()
        [second] = await store.claim(ClaimRequest("w", 30.0, 5))
        assert (jobs[1].id, JobState.RUNNING, None) == (
            second.id,
            second.state,
            second.waiting_reason,
        )

    async def test_a_cancelled_held_job_keeps_its_due_time(
        self, stores: list[PostgresStore]
    ) -> None:
        """Cancelling a job held for a slot ends its wait: it shows no reason, and its
        run_at is its own due time, not the far one that kept claims off it."""
        store = stores[0]
        group = JobLimits(concurrency_key="t:c", concurrency=1)
        jobs = [limited(group) for _ in range(2)]
        await store.enqueue(jobs)
        before = await store.get(jobs[1].id)
        await store.claim(ClaimRequest("w", 30.0, 5))
        cancelled = await store.cancel(jobs[1].id)
        assert before is not None
        assert cancelled is not None
        assert (JobState.CANCELLED, None, before.run_at) == (
            cancelled.state,
            cancelled.waiting_reason,
            cancelled.run_at,
        )
