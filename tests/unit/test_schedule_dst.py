"""Cron fire times around the 2026 daylight-saving changes match Debian cron's written rules.

The oracle walks time minute by minute and applies the rules as crontab(5) states them, with
no cron library:

- a day matches when day-of-month AND day-of-week match if either field starts with ``*``,
  and when EITHER matches if both are restricted; day-of-week 7 is Sunday, like 0;
- a job with ``*`` at the start of its minute or hour field runs by the clock as it reads at
  each moment: in a skipped hour it does not run, in a repeated hour it runs twice;
- any other job (a fixed time) runs by wall-clock time: a time skipped by the change runs
  as soon as the clock jumps (the first minute after the gap), and a time that occurs twice
  runs once, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from offload import ConfigError, Offload
from offload.schedules import Schedule

ZONES = ["Europe/Berlin", "Europe/London", "Europe/Helsinki", "America/New_York", "UTC"]
# The 2026 changes: Europe on 29 March and 25 October (01:00 UTC), the US on 8 March and
# 1 November.
TRANSITIONS = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
]
WINDOW = timedelta(days=2)
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class CronField:
    text: str
    values: frozenset[int]

    @property
    def restricted(self) -> bool:
        return not self.text.startswith("*")


def field(lo: int, hi: int, near: list[int]) -> st.SearchStrategy[CronField]:
    """One field in the forms crontab(5) documents, with its set of values."""
    value = st.sampled_from(near) | st.integers(lo, hi)

    def single(a: int) -> CronField:
        return CronField(str(a), frozenset({a}))

    def span(a: int, b: int, step: int | None) -> CronField:
        a, b = min(a, b), max(a, b)
        text = f"{a}-{b}" if step is None else f"{a}-{b}/{step}"
        return CronField(text, frozenset(range(a, b + 1, step or 1)))

    def every(step: int) -> CronField:
        return CronField(f"*/{step}", frozenset(range(lo, hi + 1, step)))

    def joined(parts: list[CronField]) -> CronField:
        return CronField(
            ",".join(p.text for p in parts), frozenset().union(*(p.values for p in parts))
        )

    steps = st.integers(1, max(2, (hi - lo) // 2))
    simple = st.one_of(
        st.builds(single, value),
        st.builds(span, value, value, st.none() | steps),
    )
    return st.one_of(
        st.just(CronField("*", frozenset(range(lo, hi + 1)))),
        st.builds(every, steps),
        simple,
        st.builds(joined, st.lists(simple, min_size=2, max_size=3)),
    )


@dataclass(frozen=True)
class Cron:
    minute: CronField
    hour: CronField
    dom: CronField
    month: CronField
    dow: CronField

    @property
    def text(self) -> str:
        return " ".join(f.text for f in (self.minute, self.hour, self.dom, self.month, self.dow))

    def day_matches(self, local: datetime) -> bool:
        in_dom = local.day in self.dom.values
        in_dow = local.isoweekday() % 7 in {d % 7 for d in self.dow.values}
        if self.dom.restricted and self.dow.restricted:
            return in_dom or in_dow
        return in_dom and in_dow

    def matches(self, local: datetime) -> bool:
        return (
            local.minute in self.minute.values
            and local.hour in self.hour.values
            and local.month in self.month.values
            and self.day_matches(local)
        )


crons = st.builds(
    Cron,
    minute=field(0, 59, [0, 15, 30, 45, 59]),
    hour=field(0, 23, [0, 1, 2, 3, 4]),
    # Mostly every day, so that the window holds fire times to compare.
    dom=st.just(CronField("*", frozenset(range(1, 32)))) | field(1, 31, [1, 8, 25, 29, 31]),
    month=st.just(CronField("*", frozenset(range(1, 13)))) | field(1, 12, [3, 10, 11]),
    dow=st.just(CronField("*", frozenset(range(8)))) | field(0, 7, [0, 6, 7]),
)


def exists(wall: datetime, zone: ZoneInfo) -> bool:
    """Whether a wall-clock time occurs at all in ``zone`` (it does not inside a gap)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def oracle(cron: Cron, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Fire times in ``(start, end]`` by the rules in the module docstring."""
    fixed_time = cron.minute.restricted and cron.hour.restricted
    out: set[datetime] = set()
    if not fixed_time:
        t = start.replace(second=0, microsecond=0) + MINUTE
        while t <= end:
            if cron.matches(t.astimezone(zone)):
                out.add(t)
            t += MINUTE
        return sorted(out)
    # Fixed times: walk the wall clock, a day either side, and map each match to an instant.
    wall = start.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) - timedelta(days=1)
    last = end.astimezone(zone).replace(tzinfo=None) + timedelta(days=1)
    while wall <= last:
        if cron.matches(wall):
            real = wall
            while not exists(real, zone):  # skipped by the change: runs when the clock jumps
                real += MINUTE
            instant = real.replace(tzinfo=zone, fold=0).astimezone(UTC)  # first occurrence
            if start < instant <= end:
                out.add(instant)
        wall += MINUTE
    return sorted(out)


def app_schedule(cron: str, zone: str) -> Schedule:
    jobs = Offload("memory://")

    @jobs.task
    def noop() -> None: ...

    return jobs.schedule(noop, cron=cron, timezone=zone)


class TestDaylightSaving:
    @settings(max_examples=120)
    @given(
        cron=crons,
        zone=st.sampled_from(ZONES),
        transition=st.sampled_from(TRANSITIONS),
        offset=st.integers(-36 * 3600, 12 * 3600),
    )
    def test_fire_times_follow_debian_cron(
        self, cron: Cron, zone: str, transition: datetime, offset: int
    ) -> None:
        """For any expression, zone and start near a 2026 change, the fire times in the next
        two days are the oracle's."""
        start = transition + timedelta(seconds=offset)
        end = start + WINDOW
        try:
            schedule = app_schedule(cron.text, zone)
        except ConfigError:
            # Refused at declaration only when no day of a leap cycle matches (31 November).
            days = (datetime(2024, 1, 1) + timedelta(days=n) for n in range(4 * 366))
            first = (min(cron.hour.values), min(cron.minute.values))
            assert not any(
                cron.matches(day.replace(hour=first[0], minute=first[1])) for day in days
            )
            return
        got = [
            datetime.fromtimestamp(ts, UTC)
            for ts in schedule.slots(start.timestamp(), end.timestamp(), limit=10_000)
        ]
        assert oracle(cron, ZoneInfo(zone), start, end) == got

    def test_worked_examples(self) -> None:
        """The examples docs/schedules.md gives for Europe/Berlin in 2026."""

        def fires(expr: str, day: datetime) -> list[str]:
            schedule = app_schedule(expr, "Europe/Berlin")
            slots = schedule.slots(day.timestamp(), (day + timedelta(days=1)).timestamp())
            zone = ZoneInfo("Europe/Berlin")
            return [datetime.fromtimestamp(s, zone).strftime("%H:%M %Z") for s in slots]

        spring = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # midnight, 29 March, Berlin
        autumn = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # midnight, 25 October, Berlin
        assert ["03:00 CEST"] == fires("30 2 * * *", spring)
        assert ["02:30 CEST"] == fires("30 2 * * *", autumn)
        assert ["01:30 CET", "03:00 CEST"] == fires("*/30 1-3 * * *", spring)[1:3]
        assert ["02:00 CEST", "02:30 CEST", "02:00 CET", "02:30 CET", "03:00 CET"] == fires(
            "*/30 2-3 * * *", autumn
        )[:5]
