"""``Clock``: time that moves only when a test says so, through delays, retries and schedules.

::

    clock = Clock(start=datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    jobs = Offload("memory://", clock=clock)
    ...
    await clock.advance(timedelta(hours=1))  # runs what came due in that hour, in order

The store reads its time from the clock (memory and SQLite stores), so a job delayed by an
hour is due exactly when the clock says so. ``advance`` stops at every moment something falls
due (a delayed job, a retry, a schedule slot), fires the schedules and runs the due jobs
through the real claim, run and completion path, then moves on, without sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from offload.scheduler import Scheduler

if TYPE_CHECKING:
    from offload.app import Offload
    from offload.worker import Worker

__all__ = ["Clock"]

# Stops per advance at most: a task that keeps re-queueing itself at the same instant would
# otherwise never let the clock reach its target.
MAX_STEPS = 100_000


class Clock:
    """A controllable clock for ``Offload(..., clock=clock)``; see the module docstring."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError(
                "Clock(start=...) must be timezone-aware, e.g. datetime(..., tzinfo=UTC)"
            )
        self._now = time.time() if start is None else start.timestamp()
        self._apps: list[Offload] = []
        self._workers: dict[int, Worker] = {}

    def __call__(self) -> float:
        """Seconds since the epoch, as the stores read it."""
        return self._now

    def __repr__(self) -> str:
        return f"<Clock {self.now.isoformat()}>"

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def attach(self, app: Offload) -> None:
        """Called by ``Offload(clock=...)``: ``advance`` runs this app's due work."""
        if all(a is not app for a in self._apps):
            self._apps.append(app)

    async def advance(self, delta: timedelta | float) -> int:
        """Move time forward by ``delta``, running everything that falls due on the way.

        Returns how many job attempts ran."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got {delta!r}")
        return await self._move_to(self._now + seconds)

    async def advance_to(self, when: datetime) -> int:
        """Move time forward to ``when`` (timezone-aware), running what falls due."""
        if when.tzinfo is None:
            raise ValueError("advance_to() needs a timezone-aware datetime")
        target = when.timestamp()
        if target < self._now:
            raise ValueError(f"a clock only moves forward; {when} is before {self.now}")
        return await self._move_to(target)

    async def run_due(self) -> int:
        """Fire due schedule slots and run due jobs now, without moving time."""
        ran = 0
        for app in self._apps:
            await app.open()
            await Scheduler(app).tick()
            ran += await self._worker(app).run_until_idle()
        return ran

    async def _move_to(self, target: float) -> int:
        ran = await self.run_due()
        for _ in range(MAX_STEPS):
            upcoming = await self._next_event()
            if upcoming is None or upcoming > target:
                break
            self._now = upcoming
            ran += await self.run_due()
        self._now = target
        return ran + await self.run_due()

    async def _next_event(self) -> float | None:
        """The earliest moment after now at which a job or a slot falls due."""
        times: list[float] = []
        for app in self._apps:
            due = await app.store.next_run_at(None)
            if due is not None and due > self._now:
                times.append(due)
            for schedule in app.schedules.values():
                times.extend(schedule.next_after(self._now))
        return min(times, default=None)

    def _worker(self, app: Offload) -> Worker:
        from offload.worker import Worker

        worker = self._workers.get(id(app))
        if worker is None:
            worker = Worker(app, concurrency=16, install_signals=False)
            self._workers[id(app)] = worker
        return worker
