"""The hooks metrics and tracing attach to, so the app and worker need neither (DESIGN §9).

An observer is added to an app with ``jobs.observers.append(...)``; ``offload.metrics`` and
``offload.tracing`` are the two that ship. Hooks run inline on the hot path, so they must be
quick and must not raise: an observer that fails is logged and skipped, never allowed to
fail an enqueue or a job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.jobs import JobRecord
    from offload.stores.base import NewJob

__all__ = ["JobObserver"]

log = logging.getLogger("offload.observers")


class JobObserver:
    """Base class with a no-op for every hook; override the ones you need.

    ``enqueuing`` and ``enqueued`` bracket one store round trip (``enqueuing`` may add to each
    job's ``meta``); ``started`` and ``finished`` bracket one attempt and are called in the
    context (``contextvars``) the task runs in, so an observer may make something current for
    the task's duration.
    """

    def enqueuing(self, jobs: Sequence[NewJob]) -> None:
        """Before the jobs are stored."""

    def enqueued(
        self,
        jobs: Sequence[NewJob],
        records: Sequence[JobRecord] | None,
        error: BaseException | None = None,
    ) -> None:
        """After the store answered: ``records`` on success (a record whose id differs from
        its job's is an existing job returned for an idempotency key), else ``error``."""

    def started(self, record: JobRecord) -> None:
        """An attempt of a claimed job is about to run (``record.attempt`` counts it)."""

    def finished(self, record: JobRecord, outcome: str, duration: float) -> None:
        """The attempt ended: ``outcome`` is ``succeeded``, ``failed``, ``retry``,
        ``cancelled``, ``requeue`` (shutdown) or ``interrupted`` (the worker was killed);
        ``duration`` is in seconds."""

    def process_died(self, record: JobRecord, exitcode: int) -> None:
        """The process running this ``cpu_bound`` attempt ended before it (a crash, an
        ``os._exit``, the OOM killer); ``exitcode`` is negative for a signal (``-9``: SIGKILL).
        ``finished`` follows for the attempt, as for any failure."""

    def worker_started(self, worker_id: str) -> None:
        """A worker in this process began claiming jobs."""

    def worker_stopped(self, worker_id: str) -> None:
        """That worker stopped."""


def notify(observers: Sequence[JobObserver], hook: str, *args: object) -> None:
    """Call ``hook`` on each observer; one that raises is logged and the others still run."""
    for observer in observers:
        try:
            getattr(observer, hook)(*args)
        except Exception as exc:
            log.error(
                "an observer failed; the job is unaffected",
                extra={
                    "action": "observer.error",
                    "observer": type(observer).__name__,
                    "hook": hook,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
