"""Workflows through the public API, run by a real worker on a real SQLite file: results
passed along chains and into chords in order, nesting, immutable steps, ``on_error``,
failures that name their step, cancel, retry that resumes, idempotency, and the status
that ``GET /jobs/{id}`` shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from offload import (
    ConfigError,
    JobCancelled,
    JobFailed,
    JobState,
    Offload,
    Worker,
    chain,
    chord,
    group,
)
from offload.records import STEP_FAILED, WaitingReason
from offload.stores.base import JobFilter
from offload.stores.memory import MemoryStore
from offload.testing import eager
from tests.stores.thirdparty_store import CountingStore


@dataclass
class Tasks:
    jobs: Offload
    calls: list[str]


@pytest.fixture
async def tasks(tmp_path: Path) -> AsyncIterator[Tasks]:
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)
    calls: list[str] = []
    flaky_left = [1]

    @jobs.task(name="wf.add")
    async def add(x: int, y: int = 0) -> int:
        calls.append(f"add({x},{y})")
        return x + y

    @jobs.task(name="wf.total")
    async def total(numbers: list[int], plus: int = 0) -> int:
        calls.append(f"total({numbers})")
        return sum(numbers) + plus

    @jobs.task(name="wf.boom", retries=0)
    async def boom(x: int) -> int:
        calls.append("boom")
        raise ValueError(f"no good: {x}")

    @jobs.task(name="wf.flaky", retries=2, backoff=0)
    async def flaky(x: int) -> int:
        calls.append("flaky")
        if flaky_left[0]:
            flaky_left[0] -= 1
            raise RuntimeError("once")
        return x * 10

    @jobs.task(name="wf.handler")
    async def handler(failed: str, note: str) -> str:
        calls.append(f"handler({note})")
        return failed

    async with jobs:
        yield Tasks(jobs, calls)


def step(tasks: Tasks, name: str) -> Any:
    """A task of the fixture's app; looked up by name, so typed loosely."""
    return tasks.jobs.tasks[f"wf.{name}"]


async def run(tasks: Tasks) -> None:
    await Worker(tasks.jobs, install_signals=False).run_until_idle()


async def test_a_chain_passes_each_result_on(tasks: Tasks) -> None:
    add = step(tasks, "add")
    handle = await chain(add.s(1, 2), add.s(10), add.s(y=100)).enqueue()
    await run(tasks)
    assert 113 == await handle.result(timeout=5)
    assert ["add(1,2)", "add(3,10)", "add(13,100)"] == tasks.calls


async def test_a_chord_gets_every_result_in_member_order(tasks: Tasks) -> None:
    add, total = step(tasks, "add"), step(tasks, "total")
    handle = await chord([add.s(n, n) for n in range(6)], total.s(plus=1)).enqueue()
    await run(tasks)
    assert 31 == await handle.result(timeout=5)
    assert "total([0, 2, 4, 6, 8, 10])" == tasks.calls[-1]


async def test_groups_map_and_nesting(tasks: Tasks) -> None:
    add, total = step(tasks, "add"), step(tasks, "total")
    alone = await group(add.s(1), chain(add.s(2), add.s(3))).enqueue()
    mapped = await chord(add.map([1, 2, 3], y=1), total.s()).enqueue()
    nested = await chain(
        add.s(1), group(add.s(1), add.s(2), group(add.s(0), add.s(5))), add.si(7)
    ).enqueue()
    inner = await chain(add.s(1), group(add.s(1), add.s(2)), total.s()).enqueue()
    await run(tasks)
    assert [1, 5] == await alone.result(timeout=5)
    assert 9 == await mapped.result(timeout=5)
    assert 7 == await nested.result(timeout=5)  # immutable: ignores the list before it
    assert 5 == await inner.result(timeout=5)


async def test_an_empty_group_gives_its_callback_an_empty_list(tasks: Tasks) -> None:
    total = step(tasks, "total")
    handle = await chord([], total.s()).enqueue()
    await run(tasks)
    assert 0 == await handle.result(timeout=5)


async def test_a_failed_step_fails_the_workflow_and_runs_on_error(tasks: Tasks) -> None:
    add, boom = step(tasks, "add"), step(tasks, "boom")
    handler = step(tasks, "handler")
    handle = await chain(
        add.s(1), boom.s(), add.s(5), on_error=handler.s(note="mail ops")
    ).enqueue()
    await run(tasks)
    with pytest.raises(JobFailed) as failed:
        await handle.result(timeout=5)
    assert STEP_FAILED == failed.value.error_type
    assert "'wf.boom'" in str(failed.value)
    assert "no good: 1" in str(failed.value)
    assert "add(1,5)" not in " ".join(tasks.calls)  # the step after never ran
    steps = await handle.steps()
    states = {(s.task, s.state) for s in steps}
    assert {
        ("wf.add", JobState.SUCCEEDED),
        ("wf.boom", JobState.FAILED),
        ("wf.add", JobState.CANCELLED),
        ("wf.handler", JobState.SUCCEEDED),
    } == states
    [ran] = [s for s in steps if s.task == "wf.handler"]
    [boomed] = [s for s in steps if s.task == "wf.boom"]
    assert f'"{boomed.id}"' == ran.result  # the handler got the failed step's id


async def test_a_handler_of_a_workflow_that_succeeds_never_runs(tasks: Tasks) -> None:
    add, handler = step(tasks, "add"), step(tasks, "handler")
    handle = await chain(add.s(1), add.s(2), on_error=handler.s(note="x")).enqueue()
    await run(tasks)
    assert 3 == await handle.result(timeout=5)
    assert not any(c.startswith("handler") for c in tasks.calls)
    assert not [s for s in await handle.steps() if s.state is JobState.QUEUED]


async def test_a_retried_step_that_succeeds_continues_the_workflow(tasks: Tasks) -> None:
    add, flaky = step(tasks, "add"), step(tasks, "flaky")
    handle = await chain(add.s(1), flaky.s(), add.s(1)).enqueue()
    await run(tasks)
    assert 11 == await handle.result(timeout=5)
    assert 2 == tasks.calls.count("flaky")


async def test_a_retry_of_a_failed_workflow_resumes_from_the_failed_step(
    tasks: Tasks,
) -> None:
    add, boom = step(tasks, "add"), step(tasks, "boom")
    handle = await chain(add.s(1), boom.s(), add.s(5)).enqueue()
    await run(tasks)
    assert JobState.CANCELLED is (await handle.refresh()).state
    resumed = await tasks.jobs.store.retry(handle.id)
    assert resumed is not None
    assert WaitingReason.INPUTS is resumed.waiting_reason
    await run(tasks)
    assert 2 == tasks.calls.count("boom")  # the failed step ran again
    assert 1 == tasks.calls.count("add(1,0)")  # the one that succeeded did not


async def test_cancel_on_the_workflow_cancels_what_has_not_run(tasks: Tasks) -> None:
    add = step(tasks, "add")
    handle = await chain(add.s(1), add.s(2), add.s(3)).enqueue()
    assert await handle.cancel()
    await run(tasks)
    assert [] == tasks.calls
    assert {JobState.CANCELLED} == {s.state for s in await handle.steps()}
    with pytest.raises(JobCancelled):
        await handle.result(timeout=5)


async def test_a_key_makes_the_whole_workflow_idempotent(tasks: Tasks) -> None:
    add, total = step(tasks, "add"), step(tasks, "total")
    first = await chord(add.map([1, 2]), total.s()).enqueue(key="report-7")
    again = await chord(add.map([1, 2]), total.s()).enqueue(key="report-7")
    assert first.id == again.id
    await run(tasks)
    assert 3 == await again.result(timeout=5)
    assert 2 == sum(c.startswith("add") for c in tasks.calls)


async def test_bad_steps_are_refused_before_anything_is_stored(tasks: Tasks) -> None:
    add, total = step(tasks, "add"), step(tasks, "total")
    with pytest.raises(TypeError, match=r"wf\.add"):
        await chain(add.s(1), add.s(1, 2, 3)).enqueue()
    with pytest.raises(TypeError, match=r"wf\.total"):
        await chord(add.map([1]), total.s(1, 2)).enqueue()
    assert [] == (await tasks.jobs.store.list(JobFilter(), 10)).jobs


async def test_the_status_route_lists_the_steps(tasks: Tasks) -> None:
    add, total = step(tasks, "add"), step(tasks, "total")
    handle = await chord(add.map([1, 2]), total.s()).enqueue()
    app = FastAPI()
    app.include_router(tasks.jobs.router(allow_anonymous=True, prefix="/jobs"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test"
    ) as client:
        body = (await client.get(f"/jobs/{handle.id}")).json()
        assert ["queued", "queued", "queued"] == [s["state"] for s in body["steps"]]
        assert "inputs" == body["steps"][-1]["waiting_reason"]
        await run(tasks)
        body = (await client.get(f"/jobs/{handle.id}")).json()
        assert (3, ["succeeded"] * 3) == (body["result"], [s["state"] for s in body["steps"]])
        member = (await client.get(f"/jobs/{body['steps'][0]['id']}")).json()
        assert member["steps"] is None


async def test_a_store_without_workflows_refuses_them() -> None:
    # A store written against the base contract only, which keeps no workflows.
    jobs = Offload(store=CountingStore(MemoryStore()), embedded_worker=False)

    @jobs.task(name="wf.one")
    async def one() -> int:
        return 1

    async with jobs:
        with pytest.raises(ConfigError, match="keeps no workflows"):
            await chain(one.s(), one.si()).enqueue()


async def test_the_memory_store_runs_workflows_in_eager_mode() -> None:
    """An app's unit tests: ``eager`` on ``memory://`` runs the whole workflow at enqueue."""
    jobs = Offload("memory://", embedded_worker=False)

    @jobs.task(name="wf.double")
    async def double(x: int) -> int:
        return 2 * x

    @jobs.task(name="wf.sum")
    async def add_up(numbers: list[int]) -> int:
        return sum(numbers)

    async with jobs:
        with eager(jobs):
            handle = await chain(chord(double.map([1, 2]), add_up.s()), double.s()).enqueue()
        assert JobState.SUCCEEDED is (await handle.refresh()).state
        assert 12 == await handle.result(timeout=1)
