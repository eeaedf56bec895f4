"""Concurrent enqueues on PostgreSQL go out together, and stay each caller's own: a job the
server refuses fails only its caller, a caller that gives up does not cut off the others,
and two callers with one key get one job."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from offload.errors import StoreUnavailable
from offload.stores import ClaimRequest
from offload.stores.postgres import PostgresStore
from offload.testing.inputs import new_job
from tests.stores.conftest import drop_postgres_schema, postgres_unreachable, postgres_url


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    schema = f"test_{uuid.uuid4().hex}"
    s = PostgresStore(postgres_url(schema))
    try:
        await s.open()
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    try:
        yield s
    finally:
        await s.close()
        await drop_postgres_schema(schema)


async def test_many_callers_at_once_each_get_their_own_jobs(store: PostgresStore) -> None:
    calls = [[new_job(), new_job()] for _ in range(200)]
    answers = await asyncio.gather(*(store.enqueue(jobs) for jobs in calls))
    assert [[j.id for j in jobs] for jobs in calls] == [[r.id for r in a] for a in answers]
    claimed = await store.claim(ClaimRequest("w", 30.0, 1000))
    assert 400 == len({j.id for j in claimed})


async def test_a_refused_job_fails_only_its_caller(store: PostgresStore) -> None:
    good = [[new_job()] for _ in range(20)]
    bad = [new_job(args="not json")]
    results = await asyncio.gather(
        *(store.enqueue(jobs) for jobs in good[:10]),
        store.enqueue(bad),
        *(store.enqueue(jobs) for jobs in good[10:]),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert 1 == len(failed)
    assert "json" in str(failed[0]).lower()
    assert results[10] is failed[0]
    claimed = await store.claim(ClaimRequest("w", 30.0, 100))
    assert sorted(j[0].id for j in good) == sorted(j.id for j in claimed)


async def test_a_caller_that_gives_up_does_not_cut_off_the_others(store: PostgresStore) -> None:
    first = asyncio.create_task(store.enqueue([new_job()]))
    others = [asyncio.create_task(store.enqueue([new_job()])) for _ in range(10)]
    await asyncio.sleep(0)
    first.cancel()
    done = await asyncio.gather(*others)
    assert 10 == len(done)
    ids = {r[0].id for r in done}
    claimed = await store.claim(ClaimRequest("w", 30.0, 100))
    assert ids <= {j.id for j in claimed}


async def test_two_callers_with_one_key_get_one_job(store: PostgresStore) -> None:
    a, b = await asyncio.gather(
        store.enqueue([new_job(key="once")]), store.enqueue([new_job(key="once")])
    )
    assert a[0].id == b[0].id
    assert 1 == len(await store.claim(ClaimRequest("w", 30.0, 10)))


async def test_whole_and_fractional_delays_in_one_batch(store: PostgresStore) -> None:
    """A batch may mix an int delay with float ones (and timeouts, and due times)."""
    jobs = [new_job(delay=3600), new_job(delay=0.5, timeout=5), new_job(timeout=2.5)]
    jobs[0].delay = 3600  # an int, as a caller building NewJob by hand may pass
    records = await store.enqueue(jobs)
    assert [j.id for j in jobs] == [r.id for r in records]
    assert records[0].run_at - records[0].enqueued_at == pytest.approx(3600, abs=1)
