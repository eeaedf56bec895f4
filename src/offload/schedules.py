"""Cron and interval schedules that fire once per slot however many schedulers run (DESIGN §6).

Every worker runs a ``scheduler.Scheduler``. Each slot is enqueued with the idempotency key
``schedule:<name>:<slot>``, so the store keeps one job per slot whichever scheduler gets there
first. The store also holds, per schedule, the pause flag and ``fired_until`` (every slot up to
it is settled), so a scheduler back from downtime knows which slots it missed, and a pause set
anywhere is obeyed everywhere.

Slot arithmetic is pure (``Schedule.slots``, ``Schedule.next_after``, ``plan``) so that it can
be tested without a store or a clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from offload.errors import ConfigError
from offload.stores.base import ScheduleState

if TYPE_CHECKING:
    from offload.tasks import Task

CatchUp = Literal["latest", "all", "none"]
CATCH_UP_CHOICES: tuple[str, ...] = get_args(CatchUp)

# A slot seen within this long of its time is on time, not missed: it covers a busy event
# loop, store round trips and clock differences between hosts, so that a scheduler running a
# little late never mistakes a slot for downtime and drops it under catch_up="latest"/"none".
LATE_GRACE = 30.0
# Slots enqueued by one tick at most (catch_up="all" after a long outage); the next tick
# follows at once, so a backlog is worked off in bounded batches.
MAX_SLOTS_PER_TICK = 500
# How many fire times listings show.
NEXT_COUNT = 3

# Names go into URLs (one path segment) and Redis keys (no hash-tag braces).
NAME_PATTERN = re.compile(r"^[^\s/{}]{1,200}$")

# Debian cron's shorthands, as the five fields they stand for.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_HELP = "five fields: minute hour day-of-month month day-of-week, e.g. '0 0 * * *'"


def slot_iso(slot: float) -> str:
    """The slot's UTC time in ISO form, as it appears in keys and meta."""
    return datetime.fromtimestamp(slot, UTC).isoformat()


def schedule_key(name: str, slot: float) -> str:
    return f"schedule:{name}:{slot_iso(slot)}"


def parse_cron(expr: str) -> str:
    """The five-field form of ``expr``; raises ``ConfigError`` saying what is wrong."""
    if not isinstance(expr, str):
        raise ConfigError(f"cron must be a string ({CRON_HELP}), got {expr!r}")
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    fields = text.split()
    if len(fields) == 6:
        raise ConfigError(
            f"invalid cron expression {expr!r}: six fields (with seconds) are not supported; "
            "use every=timedelta(seconds=...) for intervals below a minute"
        )
    if len(fields) != 5:
        raise ConfigError(
            f"invalid cron expression {expr!r}: {len(fields)} field(s), expected {CRON_HELP}"
        )
    text = " ".join(_normalize_field(f) for f in fields)
    try:
        it = CronSim(text, datetime(2026, 1, 1, tzinfo=UTC))
        next(it)
    except CronSimError as exc:
        raise ConfigError(
            f"invalid cron expression {expr!r}: {str(exc).lower() or 'malformed'} field; "
            f"expected {CRON_HELP}"
        ) from None
    except StopIteration:
        raise ConfigError(f"cron expression {expr!r} never matches a date") from None
    return text


_SINGLE_STEP = re.compile(r"^(\d+)-(\d+)/\d+$")


def _normalize_field(text: str) -> str:
    """Write ``a-a/n`` as ``a``: cronsim reads a one-value range with a step as ``a/n`` (from
    ``a`` to the field's end), where cron means the single value."""
    terms = []
    for term in text.split(","):
        match = _SINGLE_STEP.match(term)
        if match is not None and int(match.group(1)) == int(match.group(2)):
            term = match.group(1)
        terms.append(term)
    return ",".join(terms)


def parse_timezone(value: str | tzinfo, where: str) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: timezone must be an IANA name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin' "
            "or 'UTC'"
        ) from None


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule: a task, fixed arguments, and either a cron expression or an interval.

    Interval slots are whole multiples of ``every`` since the Unix epoch (UTC), so every
    instance computes the same slots without talking to the others.
    """

    name: str
    task: Task[Any, Any]
    cron: str | None = None
    timezone: tzinfo = UTC
    every: int | None = None
    """Interval in whole seconds."""
    catch_up: CatchUp = "latest"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def timezone_name(self) -> str:
        return str(getattr(self.timezone, "key", self.timezone))

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.timezone_name})"
        return f"every {timedelta(seconds=self.every or 0)}"

    # --- slot arithmetic ---------------------------------------------------------------

    def slots(self, after: float, until: float, limit: int = MAX_SLOTS_PER_TICK) -> list[float]:
        """Slot times in ``(after, until]``, oldest first, at most ``limit`` of them."""
        out: list[float] = []
        if until <= after or limit <= 0:
            return out
        if self.every is not None:
            k = math.floor(after / self.every) + 1
            while len(out) < limit and k * self.every <= until:
                out.append(float(k * self.every))
                k += 1
            return out
        for slot in self._cron_iter(after):
            if slot > until:
                break
            out.append(slot)
            if len(out) >= limit:
                break
        return out

    def next_after(self, after: float, count: int = 1) -> list[float]:
        """The next ``count`` slot times strictly after ``after``."""
        if self.every is not None:
            k = math.floor(after / self.every) + 1
            return [float((k + i) * self.every) for i in range(count)]
        out: list[float] = []
        for slot in self._cron_iter(after):
            out.append(slot)
            if len(out) >= count:
                break
        return out

    def latest(self, after: float, until: float) -> float | None:
        """The newest slot in ``(after, until]``, looking back in growing windows."""
        if self.every is not None:
            slot = float(math.floor(until / self.every) * self.every)
            return slot if slot > after else None
        window = 3600.0
        while True:
            start = max(after, until - window)
            found = None
            for slot in self._cron_iter(start):
                if slot > until:
                    break
                found = slot
            if found is not None or start <= after:
                return found
            window *= 4

    def _cron_iter(self, after: float) -> Iterator[float]:
        """Cron fire times strictly after ``after`` (cronsim, Debian cron DST rules)."""
        assert self.cron is not None
        start = datetime.fromtimestamp(after, self.timezone)
        try:
            for dt in CronSim(self.cron, start):
                ts = dt.timestamp()
                # Started inside a repeated (fall-back) hour, cronsim counts wall time from
                # its first occurrence and may name an instant before the start: skip it.
                if ts > after:
                    yield ts
        except StopIteration:  # no match within cronsim's 50-year horizon
            return


def make_schedule(
    task: Task[Any, Any],
    *,
    name: str | None,
    cron: str | None,
    every: timedelta | None,
    timezone: str | tzinfo | None,
    catch_up: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Schedule:
    """Check a declaration; every mistake raises ``ConfigError`` naming the schedule."""
    label = name if name is not None else task.name
    where = f"schedule {label!r}"
    if not isinstance(label, str) or not NAME_PATTERN.match(label):
        raise ConfigError(
            f"{where}: a schedule name is 1 to 200 characters without spaces, '/', '{{' or '}}'"
        )
    if (cron is None) == (every is None):
        raise ConfigError(f"{where}: pass exactly one of cron='...' or every=timedelta(...)")
    if catch_up not in CATCH_UP_CHOICES:
        raise ConfigError(
            f"{where}: catch_up={catch_up!r}; choose one of {', '.join(CATCH_UP_CHOICES)}"
        )
    seconds: int | None = None
    zone: tzinfo = UTC
    text: str | None = None
    if every is not None:
        if timezone is not None:
            raise ConfigError(
                f"{where}: timezone= applies to cron schedules; intervals count from the "
                "Unix epoch in UTC"
            )
        if not isinstance(every, timedelta):
            raise ConfigError(f"{where}: every must be a timedelta, got {every!r}")
        total = every.total_seconds()
        if total < 1 or total != int(total):
            raise ConfigError(
                f"{where}: every={every!r} must be a whole number of seconds, at least 1"
            )
        seconds = int(total)
    else:
        assert cron is not None
        try:
            text = parse_cron(cron)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        zone = parse_timezone(timezone if timezone is not None else "UTC", where)
    try:
        task.prepare(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"{where}: {exc}; a scheduled task runs without callers, so give its required "
            "arguments with args=(...) or kwargs={...}"
        ) from None
    return Schedule(
        name=label,
        task=task,
        cron=text,
        timezone=zone,
        every=seconds,
        catch_up=cast(CatchUp, catch_up),
        args=tuple(args),
        kwargs=dict(kwargs),
    )


# --- what to fire ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What one tick does for one schedule: the slots to enqueue, and the new mark."""

    fire: list[float]
    fired_until: float | None
    more: bool = False
    """True when a backlog remains beyond this tick's batch."""


def plan(schedule: Schedule, state: ScheduleState | None, now: float, retention: float) -> Plan:
    """Which slots to enqueue at ``now``, given the stored state (pure; see module doc).

    - First sight (no ``fired_until``): at most the newest slot, and only if it is on time
      (within ``LATE_GRACE``); a new schedule starts now, not with a backlog.
    - Paused: due slots are passed over; the mark moves on so resuming fires nothing old.
    - No slot is older than ``retention`` minus ``LATE_GRACE``: its key may already be purged,
      so enqueuing it could run it a second time.
    - A due slot more than ``LATE_GRACE`` old means the schedulers were down: ``catch_up``
      decides (all of them; only the newest; none of the missed ones).
    """
    floor = now - retention + LATE_GRACE
    since = now - LATE_GRACE if state is None or state.fired_until is None else state.fired_until
    fresh = state is None or state.fired_until is None
    since = max(since, floor)
    old_mark = None if state is None else state.fired_until
    if state is not None and state.paused:
        return Plan([], _forward(old_mark, now))
    due = schedule.slots(since, now)
    if fresh:
        return Plan(due[-1:], now)
    if not due:
        return Plan([], None)
    missed = now - due[0] >= LATE_GRACE
    if not missed or schedule.catch_up == "all":
        more = len(due) >= MAX_SLOTS_PER_TICK and schedule.slots(due[-1], now, 1) != []
        return Plan(due, due[-1] if more else now, more)
    if schedule.catch_up == "latest":
        newest = schedule.latest(since, now)
        return Plan([] if newest is None else [newest], now)
    on_time = schedule.slots(max(since, now - LATE_GRACE), now)
    return Plan(on_time, now)


def _forward(mark: float | None, to: float) -> float | None:
    return to if mark is None or to > mark else None


# The operations on schedules (status listings, pause and resume) moved to ``offload.admin``,
# with the other operator actions; their old names here still resolve, on first use, so that
# code written against them keeps working without this module importing the layer above it
# at import time.
_MOVED_TO_ADMIN = frozenset({"ScheduleStatus", "get_schedule", "set_paused", "statuses"})


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_ADMIN:
        from offload import admin

        return getattr(admin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
