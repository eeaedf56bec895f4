"""How a worker hears at once that a job it runs was cancelled (``CancelSignals``).

Without it a worker learns of a cancellation from its next heartbeat, up to a third of the
lease later (10 s by default); with a store that signals, within about a second. The
heartbeat stays: it is what reports a request the signals missed (a connection that was
down), so this loop may fail, and only logs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from offload.stores.base import CancelSignals

log = logging.getLogger("offload.worker")

# One call waits at most this long before the loop calls again; the stores need no
# renewal, so it only bounds how long a call holds its connection's read.
CANCEL_WAIT = 5.0
# After a failed call (the store unreachable), pause this long: the heartbeat still runs.
CANCEL_RETRY = 1.0


class CancelListener:
    """Calls ``signals.cancel_requests`` in a loop and hands each report to ``stop``."""

    def __init__(
        self, signals: CancelSignals, worker_id: str, stop: Callable[[set[str]], None]
    ) -> None:
        self._signals = signals
        self._worker_id = worker_id
        self._stop = stop
        self._failing = False

    async def start(self) -> None:
        """The first call, before the worker claims anything: a store that subscribes on
        it (Redis) hears every cancel of a job this worker goes on to claim."""
        await self._call(0.0)

    async def run(self) -> None:
        while True:
            if not await self._call(CANCEL_WAIT):
                await asyncio.sleep(CANCEL_RETRY)

    async def _call(self, timeout: float) -> bool:
        try:
            ids = await self._signals.cancel_requests(self._worker_id, timeout)
        except Exception as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot hear cancellations from the store; running jobs learn of theirs "
                    "at the next heartbeat until it answers again",
                    extra={
                        "action": "worker.cancel_listen_error",
                        "worker_id": self._worker_id,
                        "error": str(exc),
                    },
                )
            return False
        self._failing = False
        if ids:
            self._stop(ids)
        return True
