"""The JSON shapes of the jobs API; pydantic models so that OpenAPI documents them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from offload.admin import ScheduleStatus, view
from offload.records import JobRecord, JobState, WaitingReason

__all__ = [
    "Detail",
    "JobErrorOut",
    "JobOut",
    "JobPageOut",
    "ProgressOut",
    "ScheduleListOut",
    "ScheduleOut",
    "StepOut",
]


class ProgressOut(BaseModel):
    fraction: float = Field(ge=0.0, le=1.0, description="0 to 1, as last reported by the task")
    message: str = ""


class JobErrorOut(BaseModel):
    type: str = Field(description="exception class name")
    message: str
    traceback: str | None = None


class JobOut(BaseModel):
    """A job as the API shows it. Arguments are left out: they may hold personal data that
    a status page has no need to expose."""

    id: str
    task: str
    queue: str
    state: JobState
    priority: int
    attempt: int = Field(description="attempts started so far; above 1 means a retry")
    max_attempts: int
    cancel_requested: bool = Field(description="a cancel is waiting for the worker to act")
    waiting_reason: WaitingReason | None = Field(
        default=None,
        description="a due job held back: 'rate_limit' (no token yet), 'concurrency' (its "
        "group runs as many jobs as allowed) or 'inputs' (a workflow step whose inputs have "
        "not all succeeded)",
    )
    key: str | None = Field(default=None, description="idempotency key given at enqueue")
    enqueued_at: datetime
    run_at: datetime = Field(description="when the job is (or was) due")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: ProgressOut | None = None
    result: Any = Field(default=None, description="the task's return value, as JSON")
    error: JobErrorOut | None = Field(default=None, description="why the last attempt failed")
    meta: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepOut] | None = Field(
        default=None,
        description="for the last step of a workflow (whose id is the workflow's): every "
        "step, in the order stored, with its state",
    )

    @classmethod
    def from_record(cls, record: JobRecord) -> JobOut:
        # Built from the one redacted view (offload.admin.view) that every surface shows.
        shown = view(record)
        progress = shown.progress
        error = shown.error
        return cls(
            id=record.id,
            task=record.task,
            queue=record.queue,
            state=record.state,
            priority=record.priority,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            cancel_requested=record.cancel_requested,
            waiting_reason=record.waiting_reason,
            key=record.key,
            enqueued_at=_dt(record.enqueued_at),
            run_at=_dt(record.run_at),
            started_at=None if record.started_at is None else _dt(record.started_at),
            finished_at=None if record.finished_at is None else _dt(record.finished_at),
            progress=None
            if progress is None
            else ProgressOut(fraction=progress.fraction, message=progress.message),
            result=shown.result,
            error=None
            if error is None
            else JobErrorOut(type=error.type, message=error.message, traceback=error.traceback),
            meta=shown.meta,
        )


class StepOut(BaseModel):
    """One step of a workflow, as the status of its last step lists it."""

    id: str
    task: str
    queue: str
    state: JobState
    attempt: int
    waiting_reason: WaitingReason | None = None
    error: JobErrorOut | None = Field(default=None, description="why it failed or was not run")

    @classmethod
    def from_record(cls, record: JobRecord) -> StepOut:
        error = view(record).error
        return cls(
            id=record.id,
            task=record.task,
            queue=record.queue,
            state=record.state,
            attempt=record.attempt,
            waiting_reason=record.waiting_reason,
            error=None
            if error is None
            else JobErrorOut(type=error.type, message=error.message, traceback=error.traceback),
        )


class JobPageOut(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobOut]
    next_cursor: str | None = Field(
        description="pass as ?cursor= to get the next page; null on the last page"
    )


class ScheduleOut(BaseModel):
    """A schedule, its stored state, and when it fires next."""

    name: str
    task: str
    cron: str | None = Field(description="five-field cron expression; null for an interval")
    timezone: str | None = Field(description="IANA zone the cron expression is read in")
    every: int | None = Field(description="interval in seconds; null for a cron schedule")
    catch_up: str = Field(description="what runs after downtime: latest, all or none")
    paused: bool = Field(description="paused schedules fire nothing until resumed")
    fired_until: datetime | None = Field(description="every slot up to this time is settled")
    next: list[datetime] = Field(description="the next fire times (UTC)")

    @classmethod
    def from_status(cls, status: ScheduleStatus) -> ScheduleOut:
        s = status.schedule
        return cls(
            name=s.name,
            task=s.task.name,
            cron=s.cron,
            timezone=s.timezone_name if s.cron is not None else None,
            every=s.every,
            catch_up=s.catch_up,
            paused=status.paused,
            fired_until=None if status.fired_until is None else _dt(status.fired_until),
            next=[_dt(t) for t in status.next_times],
        )


class ScheduleListOut(BaseModel):
    items: list[ScheduleOut]


class Detail(BaseModel):
    """An error answer, in FastAPI's own ``{"detail": ...}`` shape."""

    detail: str


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
