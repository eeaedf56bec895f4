"""The hooks metrics and tracing attach to, so the app and worker need neither (DESIGN §9).

An observer is added to an app with ``jobs.observers.append(...)``; ``offload.metrics`` and
``offload.tracing`` are the two that ship. Hooks run inline on the hot path, so they must be
quick and must not raise: an observer that fails is logged and skipped, never allowed to
fail an enqueue or a job.

``JobObserver`` is the contract, a ``Protocol``; ``Observers`` is the app's list of them and
calls each hook on every member, so that each call site is a typed method call that mypy
checks against the hook's signature.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from offload.records import JobRecord
    from offload.stores.base import NewJob

__all__ = ["JobObserver", "Observers"]

log = logging.getLogger("offload.observers")


@runtime_checkable
class JobObserver(Protocol):
    """What an observer of the app and its workers implements.

    Subclass it and override the hooks you need: the others are no-ops.

    ``enqueuing`` and ``enqueued`` bracket one store round trip (``enqueuing`` may add to each
    job's ``meta``); ``started`` and ``finished`` bracket one attempt and are called in the
    context (``contextvars``) the task runs in, so an observer may make something current for
    the task's duration.
    """

    # Each no-op ends with `return`: mypy takes a protocol method whose body is only a
    # docstring for abstract, and would refuse to build a subclass that leaves one out.

    def enqueuing(self, jobs: Sequence[NewJob]) -> None:
        """Before the jobs are stored."""
        return

    def enqueued(
        self,
        jobs: Sequence[NewJob],
        records: Sequence[JobRecord] | None,
        error: BaseException | None = None,
    ) -> None:
        """After the store answered: ``records`` on success (a record whose id differs from
        its job's is an existing job returned for an idempotency key), else ``error``."""
        return

    def started(self, record: JobRecord) -> None:
        """An attempt of a claimed job is about to run (``record.attempt`` counts it)."""
        return

    def finished(self, record: JobRecord, outcome: str, duration: float) -> None:
        """The attempt ended: ``outcome`` is ``succeeded``, ``failed``, ``retry``,
        ``cancelled``, ``requeue`` (shutdown) or ``interrupted`` (the worker was killed);
        ``duration`` is in seconds."""
        return

    def process_died(self, record: JobRecord, exitcode: int) -> None:
        """The process running this ``cpu_bound`` attempt ended before it (a crash, an
        ``os._exit``, the OOM killer); ``exitcode`` is negative for a signal (``-9``: SIGKILL).
        ``finished`` follows for the attempt, as for any failure."""
        return

    def worker_started(self, worker_id: str) -> None:
        """A worker in this process began claiming jobs."""
        return

    def worker_stopped(self, worker_id: str) -> None:
        """That worker stopped."""
        return


class Observers(list[JobObserver]):
    """An app's observers (``jobs.observers``), and the one place that calls their hooks.

    A list, so that observers are appended and removed as before; each hook here calls that
    hook on every member in turn, and one that raises is logged and skipped while the others
    still run. Callers test the list first (``if observers:``), so an app without observers
    pays one length check per hook.
    """

    def enqueuing(self, jobs: Sequence[NewJob]) -> None:
        for observer in self:
            try:
                observer.enqueuing(jobs)
            except Exception as exc:
                _failed(observer, "enqueuing", exc)

    def enqueued(
        self,
        jobs: Sequence[NewJob],
        records: Sequence[JobRecord] | None,
        error: BaseException | None = None,
    ) -> None:
        for observer in self:
            try:
                observer.enqueued(jobs, records, error)
            except Exception as exc:
                _failed(observer, "enqueued", exc)

    def started(self, record: JobRecord) -> None:
        for observer in self:
            try:
                observer.started(record)
            except Exception as exc:
                _failed(observer, "started", exc)

    def finished(self, record: JobRecord, outcome: str, duration: float) -> None:
        for observer in self:
            try:
                observer.finished(record, outcome, duration)
            except Exception as exc:
                _failed(observer, "finished", exc)

    def process_died(self, record: JobRecord, exitcode: int) -> None:
        for observer in self:
            try:
                observer.process_died(record, exitcode)
            except Exception as exc:
                _failed(observer, "process_died", exc)

    def worker_started(self, worker_id: str) -> None:
        for observer in self:
            try:
                observer.worker_started(worker_id)
            except Exception as exc:
                _failed(observer, "worker_started", exc)

    def worker_stopped(self, worker_id: str) -> None:
        for observer in self:
            try:
                observer.worker_stopped(worker_id)
            except Exception as exc:
                _failed(observer, "worker_stopped", exc)


def _failed(observer: JobObserver, hook: str, exc: Exception) -> None:
    log.error(
        "an observer failed; the job is unaffected",
        extra={
            "action": "observer.error",
            "observer": type(observer).__name__,
            "hook": hook,
            "error": f"{type(exc).__name__}: {exc}",
        },
    )
