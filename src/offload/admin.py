"""What an operator does to stored jobs and schedules, and the one redacted view of a job.

The jobs API, ``offload jobs``, ``offload schedules``, ``Job.cancel`` and the dashboard all
call these, so an action means the same wherever it is taken (cancel a finished job: refused,
naming its state) and a secret hidden in one answer is hidden in all. The callers only turn
the outcome into their own form: a status code, a line on the terminal, a boolean, a page.

Each function takes an open store (or, for schedules, the app that declares them); a failure
the operator can meet is a typed error of ``offload.errors``: ``JobNotFound``,
``InvalidTransition`` (``NotCancellable`` for cancel, which carries the job),
``InvalidCursor``, ``UnknownSchedule``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from offload.errors import InvalidCursor, InvalidTransition, JobNotFound, UnknownSchedule
from offload.records import JobError, JobRecord, JobState, Progress
from offload.redaction import redact, redact_call, redact_text
from offload.schedules import NEXT_COUNT
from offload.stores.base import JobFilter, Page, Store

if TYPE_CHECKING:
    from offload.app import Offload
    from offload.schedules import Schedule

__all__ = [
    "NEXT_COUNT",
    "JobView",
    "NotCancellable",
    "ScheduleStatus",
    "cancel_job",
    "delete_job",
    "get_job",
    "get_schedule",
    "list_jobs",
    "purge_jobs",
    "retry_job",
    "set_paused",
    "shown_error",
    "statuses",
    "view",
]

# Pause and resume log under the schedules' logger, where the scheduler's own lines are.
log = logging.getLogger("offload.schedules")
# A deletion cannot be undone, so it leaves a line behind.
jobs_log = logging.getLogger("offload.admin")


# --- jobs ---------------------------------------------------------------------------------


async def get_job(store: Store, job_id: str) -> JobRecord:
    return _found(job_id, await store.get(job_id))


async def list_jobs(store: Store, filter: JobFilter, limit: int, cursor: str | None) -> Page:
    """A page of jobs, newest first; a cursor that no listing handed out is ``InvalidCursor``."""
    try:
        return await store.list(filter, limit, cursor)
    except ValueError as exc:  # the stores check only the cursor here
        raise InvalidCursor(str(exc)) from exc


class NotCancellable(InvalidTransition):
    """The job had already finished (succeeded, failed, or was cancelled before); ``record``
    is the job as it stands, for a caller to which an already cancelled job is no failure."""

    def __init__(self, message: str, record: JobRecord) -> None:
        super().__init__(message)
        self.record = record


async def cancel_job(store: Store, job_id: str) -> JobRecord:
    """Cancel a queued job now, or ask the worker running it to stop.

    Returns the job as it stands afterwards: ``cancelled``, or ``running`` with
    ``cancel_requested`` set. A job that had already finished, cancelled included, is
    ``NotCancellable``, naming its state: read first, since the store answers a cancelled job
    the same whether this call or an earlier one cancelled it."""
    before = await get_job(store, job_id)
    if before.state.finished:
        raise NotCancellable(
            f"job {job_id} is already {before.state.value}; only queued or running jobs can "
            "be cancelled",
            before,
        )
    record = _found(job_id, await store.cancel(job_id))  # None: purged since the read
    if record.state.finished and record.state is not JobState.CANCELLED:
        raise NotCancellable(
            f"job {job_id} finished as {record.state.value} before it could be cancelled",
            record,
        )
    return record


async def retry_job(store: Store, job_id: str) -> JobRecord:
    """Queue a failed or cancelled job again with a fresh attempt budget; any other state is
    ``InvalidTransition`` (the store words it, naming the state)."""
    return _found(job_id, await store.retry(job_id))


async def delete_job(store: Store, job_id: str) -> JobRecord:
    """Delete a job and free its idempotency key: a finished one at once, a queued one after
    cancelling it (so no worker claims it in between). A running job is
    ``InvalidTransition``: cancel it and let its worker stop it first. Returns the job as it
    was last stored."""
    if (await get_job(store, job_id)).state is JobState.QUEUED:
        _found(job_id, await store.cancel(job_id))
    record = _found(job_id, await store.delete(job_id))
    jobs_log.info(
        "job deleted",
        extra={
            "action": "job.deleted",
            "job_id": job_id,
            "task": record.task,
            "state": record.state.value,
        },
    )
    return record


def _found(job_id: str, record: JobRecord | None) -> JobRecord:
    if record is None:
        raise JobNotFound(f"job {job_id} not found")
    return record


async def purge_jobs(store: Store, older_than: float) -> int:
    """Delete the finished jobs that ended more than ``older_than`` seconds ago, by the
    store's clock; queued and running jobs stay. Returns how many went."""
    return await store.purge(await store.now() - older_than)


# --- the redacted view --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as an operator may see it: every value that can carry a secret (arguments,
    result, error, progress message, meta) redacted; the rest as stored, in ``record``.

    The arguments are redacted when read, not when the view is made: the jobs API never
    shows them, so a page of 500 jobs does not decode and redact 500 argument lists for
    nothing."""

    record: JobRecord
    result: Any
    error: JobError | None
    progress: Progress | None
    meta: dict[str, Any]

    @property
    def args(self) -> Any:
        return self._arguments()[0]

    @property
    def kwargs(self) -> Any:
        return self._arguments()[1]

    def _arguments(self) -> tuple[Any, Any]:
        # Secrets (by key name, registered value or Secret parameter) are hidden in what is
        # shown.
        record = self.record
        return redact_call(_decoded(record.args), _decoded(record.kwargs), record.meta)


def view(record: JobRecord, decode: Callable[[str], Any] | None = None) -> JobView:
    """Redact ``record`` for showing. ``decode`` reads the stored result (a task's codec,
    when the caller has the app); without it the result is read as JSON, and a value that is
    not JSON (a row edited by hand) is shown as it is rather than failing the answer."""
    raw = record.result
    result = None if raw is None else (decode(raw) if decode is not None else _decoded(raw))
    progress = record.progress
    return JobView(
        record=record,
        result=redact(result),
        error=shown_error(record.error),
        progress=None
        if progress is None
        else Progress(progress.fraction, redact_text(progress.message)),
        meta=redact(record.meta),
    )


def shown_error(error: JobError | None) -> JobError | None:
    """``error`` with its message and traceback redacted: what a listing shows of a job
    without building the whole view."""
    if error is None:
        return None
    return JobError(
        error.type,
        redact_text(error.message),
        None if error.traceback is None else redact_text(error.traceback),
    )


def _decoded(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


# --- schedules ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """A schedule as listings show it."""

    schedule: Schedule
    paused: bool
    fired_until: float | None
    next_times: list[float]


def get_schedule(app: Offload, name: str) -> Schedule:
    try:
        return app.schedules[name]
    except KeyError:
        known = ", ".join(sorted(app.schedules)) or "none"
        raise UnknownSchedule(f"no schedule named {name!r}; known schedules: {known}") from None


async def statuses(app: Offload, count: int = NEXT_COUNT) -> list[ScheduleStatus]:
    """Every schedule of ``app`` with its stored state and next fire times."""
    await app.open()
    now = await app.store.now()
    names = sorted(app.schedules)
    states = await app.store.schedule_states(names)
    out = []
    for name in names:
        schedule = app.schedules[name]
        state = states.get(name)
        out.append(
            ScheduleStatus(
                schedule,
                paused=state is not None and state.paused,
                fired_until=None if state is None else state.fired_until,
                next_times=schedule.next_after(now, count),
            )
        )
    return out


async def set_paused(app: Offload, name: str, paused: bool) -> ScheduleStatus:
    """Pause or resume ``name`` for every instance; slots passed while paused never fire."""
    get_schedule(app, name)
    await app.open()
    if not paused:
        # Settle the slots passed while paused first, so that no scheduler catches them up.
        await app.store.advance_schedules({name: await app.store.now()})
    await app.store.pause_schedules([name], paused)
    log.info(
        "schedule paused" if paused else "schedule resumed",
        extra={"action": "schedule.paused" if paused else "schedule.resumed", "schedule": name},
    )
    return next(s for s in await statuses(app) if s.schedule.name == name)
