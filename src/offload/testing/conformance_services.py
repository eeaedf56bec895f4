"""The conformance suite's schedule and wake-up tests: what a store offers besides the job
lifecycle. ``StoreConformance`` inherits them; see ``offload.testing.conformance``."""

from __future__ import annotations

import asyncio
import time

from offload.records import JobRecord, JobState
from offload.stores.base import ClaimRequest, ScheduleState, Store
from offload.testing.inputs import TTL, new_job


class ScheduleConformance:
    """Schedule marks: created on first use, only moved forward, paused and resumed."""

    async def test_unknown_schedules_have_no_state(self, store: Store) -> None:
        """Schedules never stored are absent from the answer, which may be asked in a batch."""
        assert {} == await store.schedule_states(["a", "b"])
        assert {} == await store.schedule_states([])

    async def test_advance_creates_and_only_moves_forward(self, store: Store) -> None:
        """``fired_until`` is created on first use and never moves back, so a lagging
        scheduler cannot make another fire a settled slot again."""
        await store.advance_schedules({"a": 100.0, "b": 50.5})
        await store.advance_schedules({"a": 90.0, "b": 60.25})
        states = await store.schedule_states(["a", "b", "c"])
        assert {
            "a": ScheduleState("a", False, 100.0),
            "b": ScheduleState("b", False, 60.25),
        } == states

    async def test_pause_and_resume_keep_the_mark(self, store: Store) -> None:
        """The pause flag is stored per schedule (created when absent) and survives advances."""
        await store.pause_schedules(["a", "new"], True)
        await store.advance_schedules({"a": 10.0})
        states = await store.schedule_states(["a", "new"])
        assert ScheduleState("a", True, 10.0) == states["a"]
        assert ScheduleState("new", True, None) == states["new"]
        await store.pause_schedules(["a"], False)
        assert ScheduleState("a", False, 10.0) == (await store.schedule_states(["a"]))["a"]

    async def test_concurrent_advances_keep_the_maximum(self, store: Store) -> None:
        """Advances racing each other (one per scheduler instance) settle on the largest."""
        marks = [float(n) for n in range(1, 41)]
        await asyncio.gather(*(store.advance_schedules({"s": m}) for m in marks))
        assert 40.0 == (await store.schedule_states(["s"]))["s"].fired_until


class WakeUpConformance:
    """An idle worker's wait: woken by new work, timed out when idle, ended by stop."""

    async def test_wait_wakes_on_enqueue(self, store: Store) -> None:
        """A waiting worker wakes promptly when a job is enqueued, without waiting out the
        timeout."""
        assert [] == await store.claim(ClaimRequest("w", TTL))
        waiter = asyncio.create_task(store.wait(None, 5.0))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await store.enqueue([new_job()])
        await asyncio.wait_for(waiter, 2.0)
        assert time.monotonic() - started < 2.0

    async def test_wait_times_out_when_idle(self, store: Store) -> None:
        """With nothing happening, wait returns after its timeout."""
        assert [] == await store.claim(ClaimRequest("w", TTL))
        started = time.monotonic()
        await store.wait(None, 0.2)
        assert time.monotonic() - started >= 0.15

    async def test_wait_claim_claims_what_arrives_while_waiting(self, store: Store) -> None:
        """An idle worker's wait ends with the jobs that woke it already claimed, leased to it
        (for one queue and for all), up to its limit. Like ``wait`` it may also return early
        with nothing (a spurious wake-up), so the worker simply waits again."""
        stop = asyncio.Event()

        async def idle_worker(queues: list[str] | None) -> list[JobRecord]:
            while True:
                jobs = await store.wait_claim(ClaimRequest("w", TTL, 2, queues), 5.0, stop)
                if jobs:
                    return jobs

        for queues in (None, ["default"]):
            assert [] == await store.claim(ClaimRequest("w", TTL, 1, queues))
            waiter = asyncio.create_task(idle_worker(queues))
            await asyncio.sleep(0.05)
            new = await store.enqueue([new_job() for _ in range(3)])
            jobs = await asyncio.wait_for(waiter, 2.0)
            assert [j.id for j in new[:2]] == [j.id for j in jobs]
            assert all(j.state is JobState.RUNNING and j.worker_id == "w" for j in jobs)
            rest = await store.claim(ClaimRequest("w2", TTL, 5, queues))
            assert [new[2].id] == [j.id for j in rest]

    async def test_wait_claim_times_out_with_nothing(self, store: Store) -> None:
        """With nothing queued, the wait returns empty after its timeout."""
        assert [] == await store.claim(ClaimRequest("w", TTL))
        started = time.monotonic()
        assert [] == await store.wait_claim(ClaimRequest("w", TTL, limit=5), 0.2, asyncio.Event())
        assert time.monotonic() - started >= 0.15

    async def test_wait_claim_returns_when_stop_is_set(self, store: Store) -> None:
        """Setting ``stop`` ends the wait at once; a job that arrives later stays queued."""
        await store.enqueue([new_job(queue="other")])
        await store.claim(ClaimRequest("w", TTL, 5, ["other"]))
        stop = asyncio.Event()
        waiter = asyncio.create_task(
            store.wait_claim(ClaimRequest("w", TTL, 5, ["default"]), 30.0, stop)
        )
        await asyncio.sleep(0.05)
        stop.set()
        assert [] == await asyncio.wait_for(waiter, 5.0)
        assert [] == await store.wait_claim(ClaimRequest("w", TTL, 5, ["default"]), 30.0, stop)
        [new] = await store.enqueue([new_job()])
        [job] = await store.claim(ClaimRequest("w2", TTL, 5, ["default"]))
        assert new.id == job.id
