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

import asyncio
import enum
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from offload.errors import InvalidCursor, InvalidTransition, JobNotFound, UnknownSchedule
from offload.records import JobError, JobRecord, JobState, Progress
from offload.redaction import redact, redact_call, redact_text
from offload.schedules import NEXT_COUNT
from offload.stores.base import JobFilter, Page, Store

if TYPE_CHECKING:
    from offload.app import Offload
    from offload.schedules import Schedule

__all__ = [
    "ACTION_STATES",
    "NEXT_COUNT",
    "BulkOutcome",
    "JobView",
    "NotCancellable",
    "ScheduleStatus",
    "bulk_action",
    "bulk_purge",
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
# Every change an operator makes to jobs leaves a line behind, with who asked when the caller
# knows: a deletion cannot be undone, and a retried or cancelled job may have side effects.
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


async def cancel_job(store: Store, job_id: str, *, actor: str | None = None) -> JobRecord:
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
    _log_change("job cancelled", "job.cancelled", record, actor)
    return record


async def retry_job(store: Store, job_id: str, *, actor: str | None = None) -> JobRecord:
    """Queue a failed or cancelled job again with a fresh attempt budget; any other state is
    ``InvalidTransition`` (the store words it, naming the state)."""
    record = _found(job_id, await store.retry(job_id))
    _log_change("job retried", "job.retried", record, actor)
    return record


async def delete_job(store: Store, job_id: str, *, actor: str | None = None) -> JobRecord:
    """Delete a job and free its idempotency key: a finished one at once, a queued one after
    cancelling it (so no worker claims it in between). A running job is
    ``InvalidTransition``: cancel it and let its worker stop it first. Returns the job as it
    was last stored."""
    if (await get_job(store, job_id)).state is JobState.QUEUED:
        _found(job_id, await store.cancel(job_id))
    record = _found(job_id, await store.delete(job_id))
    _log_change("job deleted", "job.deleted", record, actor)
    return record


def _log_change(message: str, action: str, record: JobRecord, actor: str | None) -> None:
    extra: dict[str, Any] = {
        "action": action,
        "job_id": record.id,
        "task": record.task,
        "state": record.state.value,
    }
    if actor is not None:
        extra["actor"] = actor
    jobs_log.info(message, extra=extra)


def _found(job_id: str, record: JobRecord | None) -> JobRecord:
    if record is None:
        raise JobNotFound(f"job {job_id} not found")
    return record


async def purge_jobs(store: Store, older_than: float) -> int:
    """Delete the finished jobs that ended more than ``older_than`` seconds ago, by the
    store's clock; queued and running jobs stay. Returns how many went."""
    return await store.purge(await store.now() - older_than)


# --- bulk ---------------------------------------------------------------------------------

BulkActionName = Literal["retry", "cancel", "delete"]

ACTION_STATES: dict[str, tuple[JobState, ...]] = {
    "retry": (JobState.FAILED, JobState.CANCELLED),
    "cancel": (JobState.QUEUED, JobState.RUNNING),
    "delete": (JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED),
}
"""The states each action can apply to. A caller whose operator named no state narrows the
filter to these, so that "retry the jobs of task X" means its failed and cancelled jobs, not
a refusal for every one that succeeded."""

FINISHED_STATES = tuple(state for state in JobState if state.finished)

# The ids are gathered a page at a time: a million jobs are 2,000 round trips, and no page is
# a burden on the store.
_PAGE = 500
# Jobs changed at once: enough for the SQLite store's group commit and the servers'
# connection pools to carry several changes per round trip, few enough that an operator's
# run does not crowd out the workers.
_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What a bulk action did."""

    matched: int
    """Jobs the filter selected."""
    changed: int
    """Jobs the action was applied to (none on a dry run)."""
    skipped: list[tuple[str, str]]
    """``(job id, reason)`` for each job the action refused, in the order they were selected
    (newest first): one that finished meanwhile, was purged, or is in a state the action
    does not take."""


async def bulk_action(
    store: Store,
    action: BulkActionName,
    filter: JobFilter,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
) -> BulkOutcome:
    """Apply ``retry_job``, ``cancel_job`` or ``delete_job`` to every job ``filter`` selects,
    so that a bulk retry means what retrying each of those jobs means.

    The ids are gathered before anything changes: paging a listing that the changes reorder
    would skip or repeat jobs, and the total is known to ``progress`` (called with ``(done,
    total)``, first with ``(0, total)``). A refusal (``InvalidTransition``,
    ``NotCancellable``, ``JobNotFound``) skips that job with its message; any other error
    (the store unreachable) stops the run and is raised, after a line saying how far it got.
    ``dry_run`` only counts. The filter is taken as given, states included: an empty one
    selects every job (callers that take filters from a person refuse that unless asked);
    narrow it with ``ACTION_STATES``. Each job changed is logged as by the one-job action,
    and the run as a whole once, as ``jobs.bulk_<action>``, both with ``actor``."""
    try:
        one_job = _ONE_JOB[action]
    except KeyError:
        raise ValueError(
            f"unknown bulk action {action!r}; choose retry, cancel or delete"
        ) from None

    async def apply(job_id: str) -> None:
        await one_job(store, job_id, actor=actor)

    ids = await _select(store, filter, None)
    return await _run(
        f"jobs.bulk_{action}",
        ids,
        apply,
        dry_run=dry_run,
        progress=progress,
        extra={"filter": _shown_filter(filter), "actor": actor},
    )


class _OneJobAction(Protocol):
    def __call__(
        self, store: Store, job_id: str, *, actor: str | None = None
    ) -> Awaitable[JobRecord]: ...


_ONE_JOB: dict[str, _OneJobAction] = {
    "retry": retry_job,
    "cancel": cancel_job,
    "delete": delete_job,
}


async def bulk_purge(
    store: Store,
    filter: JobFilter,
    older_than: float | None = None,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
) -> BulkOutcome:
    """``purge_jobs`` narrowed by a filter: delete the finished jobs ``filter`` selects (in
    any finished state when it names none) and, with ``older_than``, only those that ended
    more than that many seconds ago by the store's clock.

    Unlike ``bulk_action("delete")`` it never deletes a queued job: one retried after the
    selection is skipped, since the store deletes a job only while it is finished. A filter
    naming a state that is not finished is a ``ValueError``. Logged as ``jobs.bulk_purge``."""
    unfinished = [state.value for state in filter.states if not state.finished]
    if unfinished:
        raise ValueError(
            f"purge deletes finished jobs only, not {', '.join(unfinished)} ones; choose "
            "states from succeeded, failed, cancelled"
        )
    selected = filter if filter.states else replace(filter, states=FINISHED_STATES)
    cutoff = None if older_than is None else await store.now() - older_than

    async def delete(job_id: str) -> None:
        record = _found(job_id, await store.delete(job_id))
        _log_change("job deleted", "job.deleted", record, actor)

    ids = await _select(store, selected, cutoff)
    return await _run(
        "jobs.bulk_purge",
        ids,
        delete,
        dry_run=dry_run,
        progress=progress,
        extra={"filter": _shown_filter(filter), "older_than": older_than, "actor": actor},
    )


async def _select(store: Store, filter: JobFilter, finished_before: float | None) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list(filter, _PAGE, cursor)
        ids.extend(
            r.id
            for r in page.jobs
            if finished_before is None
            or (r.finished_at is not None and r.finished_at < finished_before)
        )
        cursor = page.next_cursor
        if cursor is None:
            return ids


async def _run(
    action: str,
    ids: list[str],
    apply: Callable[[str], Awaitable[object]],
    *,
    dry_run: bool,
    progress: Callable[[int, int], None] | None,
    extra: dict[str, Any],
) -> BulkOutcome:
    total = len(ids)
    reasons: list[str | None] = [None] * total
    done = changed = 0
    todo = iter(range(0 if dry_run else total))
    failures: list[Exception] = []

    async def work() -> None:
        nonlocal done, changed
        for index in todo:  # one iterator shared by every worker: each id is taken once
            if failures:
                return
            try:
                await apply(ids[index])
            except (InvalidTransition, JobNotFound) as exc:
                reasons[index] = str(exc)
            except Exception as exc:
                # Stop taking jobs but let the other workers' jobs in flight finish, so the
                # counts say what was done rather than what was abandoned half way.
                failures.append(exc)
                return
            else:
                changed += 1
            done += 1
            if progress is not None:
                progress(done, total)

    def summary() -> dict[str, Any]:
        skipped = sum(reason is not None for reason in reasons)
        counts = {"matched": total, "changed": changed, "skipped": skipped, "dry_run": dry_run}
        return {"action": action, **counts, **extra}

    def stopped(error: BaseException) -> None:
        jobs_log.warning(
            f"{action.replace('.', ' ').replace('_', ' ')} stopped after {done} of {total}",
            extra={"action": action, **summary(), "done": done, "error": type(error).__name__},
        )

    if progress is not None and not dry_run:
        progress(0, total)
    try:
        await asyncio.gather(*(work() for _ in range(min(_CONCURRENCY, total))))
    except BaseException as exc:  # cancelled from outside: the line still says how far
        stopped(exc)
        raise
    if failures:
        stopped(failures[0])
        raise failures[0]
    jobs_log.info(action.replace(".", " ").replace("_", " "), extra={"action": action, **summary()})
    skipped = [(ids[i], reason) for i, reason in enumerate(reasons) if reason is not None]
    return BulkOutcome(matched=total, changed=changed, skipped=skipped)


def _shown_filter(filter: JobFilter) -> dict[str, Any]:
    """The fields the filter sets, as plain values for a log line; read from the dataclass
    so that a field added to ``JobFilter`` shows without a change here."""
    shown: dict[str, Any] = {}
    for field in fields(filter):
        value = getattr(filter, field.name)
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            value = [v.value if isinstance(v, enum.Enum) else v for v in value]
        elif isinstance(value, enum.Enum):
            value = value.value
        shown[field.name] = value
    return shown


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
    history: list[JobError]
    """The error of each attempt that ended in one, oldest first, redacted like ``error``."""

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
        history=[shown for shown in map(shown_error, record.history) if shown is not None],
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
        error.attempt,
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
