"""Backpressure at enqueue: ``max_queued`` per task and ``queue_limits`` per queue refuse a
call past the backlog with ``QueueFull`` (nothing of it stored), which an endpoint answers
429 with ``Retry-After``; on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from offload import ConfigError, JobState, Offload, QueueFull, Worker
from offload.fastapi import Background
from offload.stores.base import ClaimRequest, JobFilter


def app_on(tmp_path: Path, **options: object) -> Offload:
    return Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False, **options)  # type: ignore[arg-type]


async def stored(jobs: Offload) -> int:
    return len((await jobs.store.list(JobFilter(), 1000)).jobs)


async def test_a_task_past_its_backlog_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    jobs = app_on(tmp_path)

    @jobs.task(name="tests.capped", max_queued=3)
    async def capped(n: int) -> None:
        return None

    async with jobs:
        kept = [await capped.options(key=f"k{n}").enqueue(n) for n in range(3)]
        with pytest.raises(QueueFull) as refused:
            await capped.enqueue(3)
        assert ("task 'tests.capped'", 3, 3) == (
            refused.value.what,
            refused.value.limit,
            refused.value.queued,
        )
        assert refused.value.retry_after >= 1
        with pytest.raises(QueueFull):  # a batch goes in whole or not at all
            await jobs.enqueue_many([capped.prepare(n) for n in range(2)])
        assert 3 == await stored(jobs)
        # A retried call whose key is on record adds nothing, so it is not refused.
        again = await capped.options(key="k0").enqueue(0)
        assert kept[0].id == again.id
        # Once a job has started, the backlog has room again.
        await jobs.store.claim(ClaimRequest("w", 30, 1))
        await capped.enqueue(4)
        assert 4 == await stored(jobs)


async def test_a_queue_limit_counts_every_task_of_the_queue(tmp_path: Path) -> None:
    jobs = app_on(tmp_path, queue_limits={"mail": 2})

    @jobs.task(name="tests.welcome", queue="mail")
    async def welcome() -> None:
        return None

    @jobs.task(name="tests.digest", queue="mail")
    async def digest() -> None:
        return None

    @jobs.task(name="tests.other")
    async def other() -> None:
        return None

    async with jobs:
        await welcome.enqueue()
        await digest.enqueue()
        with pytest.raises(QueueFull, match="queue 'mail'"):
            await welcome.enqueue()
        await other.enqueue()  # another queue is not held back
        await welcome.options(queue="elsewhere").enqueue()


async def test_an_endpoint_answers_429_and_every_accepted_job_runs(tmp_path: Path) -> None:
    jobs = app_on(tmp_path)
    ran: list[int] = []

    @jobs.task(name="tests.signup", max_queued=5)
    async def signup(n: int) -> None:
        ran.append(n)

    app = FastAPI()

    @app.post("/signup/{n}", status_code=202)
    async def endpoint(n: int, background: Background) -> dict[str, str]:
        job = await background.add_task(signup, n)
        return {"job_id": job.id}

    transport = httpx.ASGITransport(app)
    async with jobs, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answers = [await client.post(f"/signup/{n}") for n in range(8)]
        assert [202] * 5 + [429] * 3 == [a.status_code for a in answers]
        refused = answers[-1]
        assert int(refused.headers["Retry-After"]) >= 1
        assert "full" in refused.json()["detail"]
        accepted = {a.json()["job_id"] for a in answers if a.status_code == 202}
        await Worker(jobs, install_signals=False).run_until_idle()
        done = await jobs.store.list(JobFilter(states=(JobState.SUCCEEDED,)), 100)
        assert accepted == {j.id for j in done.jobs}
        assert [0, 1, 2, 3, 4] == sorted(ran)


async def test_a_store_that_cannot_count_at_enqueue_refuses_to_open() -> None:
    jobs = Offload("memory://", embedded_worker=False)

    @jobs.task(max_queued=10)
    async def capped() -> None:
        return None

    with pytest.raises(ConfigError, match="max_queued"):
        await capped.enqueue()


@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_a_bad_backlog_limit_is_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ValueError, match="max_queued must be"):
        app_on(tmp_path).task(max_queued=value)(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"queue_limits\['q'\] must be"):
        app_on(tmp_path, queue_limits={"q": value})
