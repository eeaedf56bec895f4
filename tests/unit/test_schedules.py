"""Schedules: declaration, slot arithmetic, catch-up, pause, and the test clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from offload import ConfigError, JobContext, JobState, Offload, Retry
from offload.schedules import LATE_GRACE, Schedule, plan, set_paused, statuses
from offload.stores import JobFilter, ScheduleState
from offload.testing import Clock

T0 = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
DAY = 86400.0


def _noop() -> None: ...


def ts(when: datetime) -> float:
    return when.timestamp()


def interval(seconds: int, catch_up: str = "latest") -> Schedule:
    jobs = Offload("memory://")

    @jobs.task
    def noop() -> None: ...

    return jobs.schedule(noop, every=timedelta(seconds=seconds), catch_up=catch_up)


class TestDeclaration:
    def test_bad_cron_names_expression_and_field(self) -> None:
        """A wrong field fails at declaration, naming the expression and the field."""
        jobs = Offload("memory://")
        with pytest.raises(ConfigError) as info:

            @jobs.periodic(cron="61 * * * *")
            def job() -> None: ...

        assert "'61 * * * *'" in str(info.value)
        assert "bad minute" in str(info.value)

    @pytest.mark.parametrize(
        ("expr", "says"),
        [
            ("0 0 * *", r"4 field\(s\)"),
            ("0 0 0 * * *", "six fields"),
            ("0 0 31 2 *", "day-of-month"),
            ("0 25 * * *", "bad hour"),
        ],
    )
    def test_malformed_cron(self, expr: str, says: str) -> None:
        """Field count, seconds fields and impossible dates are refused with the reason."""
        jobs = Offload("memory://")
        task = jobs.task(name="t")(_noop)
        with pytest.raises(ConfigError, match=says):
            jobs.schedule(task, cron=expr)

    def test_unknown_time_zone(self) -> None:
        """An unknown zone fails at declaration, naming it."""
        jobs = Offload("memory://")
        with pytest.raises(ConfigError, match="unknown time zone 'Europe/Berlln'"):

            @jobs.periodic(cron="0 0 * * *", timezone="Europe/Berlln")
            def job() -> None: ...

    def test_required_arguments_must_be_given(self) -> None:
        """A task with required parameters needs args=/kwargs=; the error says so."""
        jobs = Offload("memory://")
        with pytest.raises(ConfigError, match=r"missing a required argument: 'user_id'.*args="):

            @jobs.periodic(every=timedelta(minutes=5))
            def remind(user_id: int) -> None: ...

        @jobs.periodic(every=timedelta(minutes=5), kwargs={"user_id": 7}, name="remind7")
        def remind2(user_id: int) -> None: ...

        assert {"user_id": 7} == jobs.schedules["remind7"].kwargs

    @pytest.mark.parametrize(
        ("options", "says"),
        [
            ({}, "exactly one of"),
            ({"cron": "* * * * *", "every": timedelta(seconds=1)}, "exactly one of"),
            ({"every": timedelta(milliseconds=1500)}, "whole number of seconds"),
            ({"every": timedelta(seconds=5), "timezone": "UTC"}, "timezone= applies"),
            ({"every": timedelta(seconds=5), "catch_up": "some"}, "catch_up='some'"),
            ({"every": timedelta(seconds=5), "name": "a/b"}, "schedule name"),
        ],
    )
    def test_other_mistakes(self, options: dict[str, object], says: str) -> None:
        """Every other mistake is a ConfigError with the reason."""
        jobs = Offload("memory://")
        task = jobs.task(name="t")(_noop)
        with pytest.raises(ConfigError, match=says):
            jobs.schedule(task, **options)  # type: ignore[arg-type]

    def test_periodic_composes_with_task_both_ways(self) -> None:
        """Above @jobs.task it keeps the task and its options; on a plain function it
        registers the task; below @jobs.task it is refused with the order to use."""
        jobs = Offload("memory://")

        @jobs.periodic(cron="0 0 * * *", timezone="Europe/Berlin")
        @jobs.task(queue="nightly", retries=1)
        async def nightly() -> int:
            return 1

        @jobs.periodic(every=timedelta(minutes=5))
        def plain() -> None: ...

        assert jobs.schedules[nightly.name].task is nightly
        assert "nightly" == nightly.config.queue
        assert jobs.tasks[plain.name] is plain
        with pytest.raises(ConfigError, match=r"put @jobs\.periodic"):

            @jobs.task
            @jobs.periodic(every=timedelta(minutes=5), name="other")
            def wrong() -> None: ...

    def test_names_are_unique(self) -> None:
        """A second schedule of the same task needs its own name."""
        jobs = Offload("memory://")
        task = jobs.task(name="t")(_noop)
        jobs.schedule(task, cron="0 * * * *")
        with pytest.raises(ConfigError, match="already exists; pass name="):
            jobs.schedule(task, cron="30 * * * *")
        assert "t-half" == jobs.schedule(task, cron="30 * * * *", name="t-half").name


class TestSlots:
    def test_intervals_are_aligned_to_the_epoch(self) -> None:
        """Every instance computes the same slots: multiples of the interval since 1970."""
        s = interval(300)
        start = ts(T0) + 1
        assert [ts(T0) + 300, ts(T0) + 600] == s.slots(start, ts(T0) + 600)
        assert [ts(T0) + 300] == s.next_after(ts(T0))

    def test_slots_are_strictly_after_and_bounded(self) -> None:
        """A slot at the start is not repeated; the limit caps the list."""
        s = interval(1)
        assert [ts(T0) + n for n in range(1, 4)] == s.slots(ts(T0), ts(T0) + 10, limit=3)

    def test_cron_in_a_zone(self) -> None:
        """Midnight in Berlin is 23:00 UTC in winter and 22:00 UTC in summer."""
        jobs = Offload("memory://")
        task = jobs.task(name="t")(_noop)
        s = jobs.schedule(task, cron="@daily", timezone="Europe/Berlin")
        nxt = s.next_after(ts(T0), 2)
        assert [
            datetime(2026, 3, 28, 23, 0, tzinfo=UTC),
            datetime(2026, 3, 29, 22, 0, tzinfo=UTC),
        ] == [datetime.fromtimestamp(n, UTC) for n in nxt]


class TestCatchUp:
    def test_first_sight_fires_only_the_newest_on_time_slot(self) -> None:
        """A schedule no scheduler has seen starts now, not with a backlog: the slot just
        passed fires if it is on time, and nothing older."""
        s = interval(10)
        now = ts(T0) + 5
        step = plan(s, None, now, DAY)
        assert ([ts(T0)], now) == (step.fire, step.fired_until)
        assert [] == plan(interval(3600), None, ts(T0) + LATE_GRACE, DAY).fire

    def test_every_slot_fires_while_schedulers_keep_up(self) -> None:
        """Slots a little late (within the grace) all fire, whatever the policy."""
        s = interval(1, catch_up="none")
        state = ScheduleState("s", False, ts(T0))
        assert [ts(T0) + n for n in range(1, 6)] == plan(s, state, ts(T0) + 5.5, DAY).fire

    @pytest.mark.parametrize(
        ("catch_up", "expected"),
        [
            ("latest", [12 * 3600.0]),
            ("all", [n * 3600.0 for n in range(1, 13)]),
            ("none", []),
        ],
    )
    def test_downtime(self, catch_up: str, expected: list[float]) -> None:
        """After twelve hours down, an hourly schedule fires the newest slot, all of them or
        none, as its policy says."""
        s = interval(3600, catch_up=catch_up)
        base = ts(T0)
        state = ScheduleState("s", False, base)
        step = plan(s, state, base + 12 * 3600 + 60, DAY)
        assert [base + e for e in expected] == step.fire
        assert base + 12 * 3600 + 60 == step.fired_until

    def test_none_still_fires_on_time_slots_after_downtime(self) -> None:
        """catch_up="none" drops missed slots only; the ones still on time fire."""
        s = interval(1, catch_up="none")
        state = ScheduleState("s", False, ts(T0))
        now = ts(T0) + 100
        on_time = [now - n for n in range(int(LATE_GRACE) - 1, -1, -1)]
        assert on_time == plan(s, state, now, DAY).fire

    def test_slots_older_than_retention_never_fire(self) -> None:
        """Keys of slots older than the retention may be purged: those slots are skipped,
        even with catch_up="all"."""
        s = interval(3600, catch_up="all")
        state = ScheduleState("s", False, ts(T0))
        now = ts(T0) + 3 * DAY
        fired = plan(s, state, now, DAY).fire
        assert fired[0] > now - DAY
        assert 24 == len(fired)

    def test_paused_passes_slots_over(self) -> None:
        """A paused schedule fires nothing; its mark moves on so nothing fires on resume."""
        s = interval(10)
        step = plan(s, ScheduleState("s", True, ts(T0)), ts(T0) + 100, DAY)
        assert ([], ts(T0) + 100) == (step.fire, step.fired_until)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'clock.db'}"


class TestClock:
    @pytest.fixture
    async def clocked(self, url: str) -> AsyncIterator[tuple[Clock, Offload]]:
        clock = Clock(start=T0)
        jobs = Offload(url, clock=clock, embedded_worker=False)
        async with jobs:
            yield clock, jobs

    async def test_delay(self, clocked: tuple[Clock, Offload]) -> None:
        """A job delayed by an hour is still queued at 59 minutes and done at 60."""
        clock, jobs = clocked

        @jobs.task
        async def remind() -> str:
            return clock.now.isoformat()

        job = await remind.options(delay=timedelta(hours=1)).enqueue()
        await clock.advance(timedelta(minutes=59))
        await job.refresh()
        assert JobState.QUEUED == job.state
        await clock.advance(timedelta(minutes=1))
        assert "2026-03-28T13:00:00+00:00" == await job.result(timeout=1)

    async def test_retry(self, clocked: tuple[Clock, Offload]) -> None:
        """A retry ten minutes out runs when the clock gets there, not before."""
        clock, jobs = clocked

        @jobs.task(retries=1)
        async def flaky(ctx: JobContext) -> int:
            if ctx.attempt == 1:
                raise Retry(after=timedelta(minutes=10))
            return ctx.attempt

        job = await flaky.enqueue()
        assert 1 == await clock.run_due()
        await clock.advance(timedelta(minutes=9))
        await job.refresh()
        assert (JobState.QUEUED, 1) == (job.state, job.attempt)
        await clock.advance(timedelta(minutes=1))
        assert 2 == await job.result(timeout=1)

    async def test_schedule(self, clocked: tuple[Clock, Offload]) -> None:
        """An hour of a five-minute schedule runs twelve jobs, one per slot, each keyed and
        tagged with its slot; pausing stops it everywhere and resuming fires nothing old."""
        clock, jobs = clocked
        ran: list[str] = []

        @jobs.periodic(every=timedelta(minutes=5), name="tick")
        async def tick(ctx: JobContext) -> None:
            ran.append(ctx.meta["slot"])

        await clock.advance(timedelta(hours=1) - timedelta(seconds=1))
        assert 12 == len(ran)
        assert "2026-03-28T12:00:00+00:00" == ran[0]
        page = await jobs.store.list(JobFilter(tasks=(tick.name,)), 100)
        assert {f"schedule:tick:{slot}" for slot in ran} == {j.key for j in page.jobs}
        assert {"schedule": "tick", "slot": ran[-1]} == page.jobs[0].meta

        await set_paused(jobs, "tick", True)
        await clock.advance(timedelta(minutes=30))
        assert 12 == len(ran)
        [status] = await statuses(jobs)
        assert status.paused
        await set_paused(jobs, "tick", False)
        await clock.advance(timedelta(minutes=5))
        assert ["2026-03-28T13:30:00+00:00"] == ran[12:]

    async def test_clock_refuses_a_server_store(self) -> None:
        """A server's clock is shared by every process: a test clock cannot replace it."""
        with pytest.raises(ConfigError, match="memory:// and sqlite:///"):
            Offload("redis://127.0.0.1:6379/0", clock=Clock())
