"""An asyncio event loop whose timers fire when they are due, not up to a millisecond later.

asyncio waits for its next timer with ``epoll_wait``, which takes whole milliseconds, and
CPython rounds the wait up. So ``await asyncio.sleep(0.01)`` sleeps 10.5-10.8 ms on average,
and a worker running short I/O-bound jobs (a 10 ms call, a sleep between polls) loses 5-8 %
of its slots' time to rounding alone. ``offload worker`` runs on this loop; an app can use it
too (``asyncio.Runner(loop_factory=offload.eventloop.new_event_loop)``).

The loop is asyncio's own selector loop with one change in how it waits: when the wait has a
deadline under a quarter of a second, it waits on the epoll descriptor itself with
``select()``, whose timeout has microsecond resolution, then collects the ready events from
epoll without blocking. All descriptors stay in epoll, so there is no limit on how many a job
may open. Where epoll is missing (macOS, Windows) this is asyncio's default loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import select
import selectors
import sys
from typing import Any

# Waits shorter than this are made with microsecond resolution (see select below).
_PRECISE_BELOW = 0.25
# prctl(2) option, and the slack asked for: 1 µs instead of the default 50 µs.
_PR_SET_TIMERSLACK = 29
_TIMER_SLACK_NS = 1_000


class _PreciseEpollSelector(selectors.EpollSelector):
    # select() accepts descriptors below FD_SETSIZE (1,024 on Linux) only. The epoll
    # descriptor is created with the loop, so it is low unless the process already held a
    # thousand files; then the selector waits as epoll alone would.
    _precise = True

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # A long wait (the next timer is a store deadline seconds away, say) goes to epoll
        # alone: one system call instead of two on every wait for a reply, and epoll's
        # rounding up to the next millisecond is under 0.4 % of such a wait.
        if timeout is not None and 0 < timeout < _PRECISE_BELOW and self._precise:
            try:
                select.select([self._selector.fileno()], [], [], timeout)
            except ValueError:  # descriptor out of range for select()
                self._precise = False
            else:
                timeout = 0
        return super().select(timeout)

    # ``selectors.EpollSelector`` keeps its epoll object here; typed for mypy.
    _selector: Any


def _tighten_timer_slack() -> None:
    """Let the kernel wake this thread within 1 µs of a timeout instead of 50 µs.

    Linux may defer a sleeping thread's wake-up by its "timer slack" to batch wake-ups; on
    the loop's thread that is added to every timer. Threads started from here (the executor's)
    inherit the setting. Best effort: on failure the default slack stays."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, _TIMER_SLACK_NS, 0, 0, 0)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop with precise timers (asyncio's default loop where epoll is missing).

    On Linux it also narrows the calling thread's timer slack (see ``_tighten_timer_slack``)."""
    if not hasattr(selectors, "EpollSelector"):
        return asyncio.new_event_loop()
    _tighten_timer_slack()
    return asyncio.SelectorEventLoop(_PreciseEpollSelector())
