"""One log line when the job store goes away and one when it answers again, not one per request.

While the store is down every request that needs it answers 503, so a line (let alone a
traceback) per request would bury the rest of the log under copies of one fact and cost the
server a formatted traceback per failure. The first failure of an outage logs a warning naming
the error; later ones are counted and logged at DEBUG; the first success after them logs how
long the outage lasted and how many requests it refused.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

__all__ = ["StoreOutage", "outage_of"]

log = logging.getLogger("offload.fastapi")


class StoreOutage:
    """The outage state of one app's store, as seen by its HTTP endpoints.

    Thread-safe: ``def`` endpoints (``add_task_sync``) report from FastAPI's thread pool.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log
        self.down_since: float | None = None
        self.refused = 0
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, **fields: Any) -> None:
        """A request could not reach the store and answers 503."""
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = time.monotonic()
                self.refused = 0
            self.refused += 1
            refused = self.refused
        extra = {
            "action": "fastapi.store_unavailable",
            "error": f"{type(exc).__name__}: {exc}",
            "refused": refused,
            **fields,
        }
        if first:
            self.log.warning(
                "job store unavailable; requests that need it answer 503 until it is back",
                extra=extra,
            )
        else:
            self.log.debug("job store still unavailable", extra=extra)

    def answered(self) -> None:
        """The store served a request; ends an outage if one was going on."""
        if self.down_since is None:  # the usual case: one attribute read, no lock
            return
        with self._lock:
            since, refused = self.down_since, self.refused
            self.down_since = None
            self.refused = 0
        if since is not None:
            self.log.info(
                "job store available again",
                extra={
                    "action": "fastapi.store_recovered",
                    "refused": refused,
                    "outage_seconds": round(time.monotonic() - since, 3),
                },
            )


# Per app, not per process: two apps in one process have two stores that fail on their own.
_OUTAGES: weakref.WeakKeyDictionary[object, StoreOutage] = weakref.WeakKeyDictionary()
_CREATE = threading.Lock()


def outage_of(jobs: object) -> StoreOutage:
    """The outage state of ``jobs``'s store, created on first use."""
    outage = _OUTAGES.get(jobs)
    if outage is None:
        with _CREATE:
            outage = _OUTAGES.setdefault(jobs, StoreOutage())
    return outage
