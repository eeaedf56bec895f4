"""The schedule loop: every worker runs a ``Scheduler`` that enqueues the due slots (DESIGN §6).

Each slot is enqueued with the idempotency key ``schedule:<name>:<slot>``, so the store keeps
one job per slot whichever scheduler gets there first. The store also holds, per schedule,
the pause flag and ``fired_until`` (every slot up to it is settled), so a scheduler back from
downtime knows which slots it missed, and a pause set anywhere is obeyed everywhere. Which
slots those are is decided by the pure functions of ``schedules.py``; this module adds the
store, the clock and the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from offload.app import Offload
from offload.schedules import Schedule, plan, schedule_key, slot_iso
from offload.tasks import Prepared

__all__ = ["Scheduler"]

log = logging.getLogger("offload.schedules")

# A scheduler re-reads the store at least this often even when the next slot is far off, so
# that it notices a wall-clock jump (suspend, NTP step) and schedules added at run time well
# within LATE_GRACE.
MAX_SLEEP = 10.0
# After a failed tick (store unreachable) the scheduler tries again after this long.
ERROR_BACKOFF = 1.0
# Wake a little after the slot, not before: a host clock a hair ahead of the store's would
# otherwise see the slot not yet due and spin.
WAKE_LAG = 0.005


class Scheduler:
    """Enqueues the due slots of every schedule of ``app``; one per worker process."""

    def __init__(self, app: Offload) -> None:
        self.app = app

    async def tick(self) -> float | None:
        """Fire what is due now; returns when the next slot falls (store clock), or ``None``
        when there is no schedule."""
        app = self.app
        schedules = list(app.schedules.values())
        if not schedules:
            return None
        await app.open()
        store = app.store
        now = await store.now()
        states = await store.schedule_states([s.name for s in schedules])
        prepared: list[Prepared[Any]] = []
        marks: dict[str, float] = {}
        wake = now + MAX_SLEEP
        for schedule in schedules:
            step = plan(schedule, states.get(schedule.name), now, app.retention)
            prepared.extend(_prepare(schedule, slot) for slot in step.fire)
            if step.fired_until is not None:
                marks[schedule.name] = step.fired_until
            if step.more:
                wake = now
            else:
                nxt = schedule.next_after(now)
                if nxt:
                    wake = min(wake, nxt[0])
        if prepared:
            # Enqueue before moving the marks: a crash in between re-enqueues, and the keys
            # make that harmless; the other order could lose a slot.
            jobs = await app.enqueue_many(prepared)
            log.info(
                "schedule slots enqueued",
                extra={
                    "action": "schedule.fired",
                    "count": len(jobs),
                    "keys": [p.job.key for p in prepared[:10]],
                },
            )
        if marks:
            await store.advance_schedules(marks)
        return wake

    async def run(self, stop: asyncio.Event) -> None:
        """Tick at every slot until ``stop`` is set; store errors are logged and retried."""
        while not stop.is_set():
            try:
                wake = await self.tick()
                current = await self.app.store.now()
            except Exception as exc:
                log.error(
                    "scheduler tick failed; retrying",
                    extra={"action": "schedule.error", "error": str(exc)},
                )
                delay = ERROR_BACKOFF
            else:
                if wake is None:  # no schedule yet; one may be added at run time
                    wake = current + MAX_SLEEP
                delay = min(max(wake - current, 0.0) + WAKE_LAG, MAX_SLEEP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def _prepare(schedule: Schedule, slot: float) -> Prepared[Any]:
    call = schedule.task.options(
        key=schedule_key(schedule.name, slot), run_at=datetime.fromtimestamp(slot, UTC)
    )
    prepared = call.prepare(*schedule.args, **schedule.kwargs)
    prepared.job.meta = {"schedule": schedule.name, "slot": slot_iso(slot)}
    return prepared
