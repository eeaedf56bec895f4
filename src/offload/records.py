"""The job's records: its states, its stored row, its error and progress.

At the bottom of the package, below the stores: every store reads and writes these, and none
needs the ``Job`` handle (``offload.jobs``) that talks to a store. Times are float seconds
since the epoch (cheap to compare and store in every backend).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HISTORY_MAX",
    "TRACEBACK_MAX",
    "JobError",
    "JobLimits",
    "JobRecord",
    "JobState",
    "Progress",
    "WaitingReason",
]

HISTORY_MAX = 10
"""Errors a job keeps in ``JobRecord.history``: enough to see a pattern across retries, few
enough that a job retried forever does not grow its row without end."""

TRACEBACK_MAX = 8_000
"""Characters of traceback each history entry keeps, from the end (which names the error)."""


class WaitingReason(enum.StrEnum):
    """Why a queued job that is due has not started: so that "throttled" reads apart from
    "stuck" in the job's status."""

    RATE_LIMIT = "rate_limit"
    """Its rate limit has no token now; it is due again when the next one frees up."""
    CONCURRENCY = "concurrency"
    """As many jobs of its concurrency key run as the limit allows; it starts when one ends."""
    INPUTS = "inputs"
    """A workflow step whose inputs (the steps before it) have not all succeeded yet."""


# The error types of workflow steps cancelled because a step before them failed, or was
# cancelled (``stores.base.Workflows``): the message names that step.
STEP_FAILED = "WorkflowStepFailed"
STEP_CANCELLED = "WorkflowStepCancelled"


@dataclass(frozen=True, slots=True)
class JobLimits:
    """The flow-control limits a job is held to, carried by the job itself so that the store
    enforces them for every worker without knowing the task: a token bucket (``rate`` tokens
    a second, up to ``burst``) shared by every job of ``rate_key``, at most ``concurrency``
    jobs of ``concurrency_key`` running at once, and the backlogs past which an enqueue is
    refused (``max_queued`` of the task, ``queue_max`` of the queue)."""

    rate_key: str | None = None
    rate: float | None = None
    burst: int = 1
    concurrency_key: str | None = None
    concurrency: int | None = None
    max_queued: int | None = None
    """At most this many queued jobs of the task (those enqueued with the limit)."""
    queue_max: int | None = None
    """At most this many queued jobs in the job's queue, whatever their task."""


class JobState(enum.StrEnum):
    """Where a job is in its life (DESIGN §3). Delayed jobs are ``queued`` with a future run_at."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True, slots=True)
class JobError:
    """Why an attempt failed, kept on the job so the failure can be read without the logs."""

    type: str
    message: str
    traceback: str | None = None
    attempt: int | None = None
    """The attempt that ended in this error, where known (history entries always say)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
        }
        # Left out when unknown, so the JSON of a job's last error stays as it always was.
        if self.attempt is not None:
            data["attempt"] = self.attempt
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> JobError | None:
        if not data:
            return None
        attempt = data.get("attempt")
        return cls(
            str(data["type"]),
            str(data["message"]),
            data.get("traceback"),
            None if attempt is None else int(attempt),
        )

    def for_history(self, attempt: int) -> JobError:
        """This error as an entry of ``JobRecord.history``: tagged with its attempt, its
        traceback cut to ``TRACEBACK_MAX`` characters from the end."""
        tb = self.traceback
        if tb is not None and len(tb) > TRACEBACK_MAX:
            tb = tb[-TRACEBACK_MAX:]
        return JobError(self.type, self.message, tb, attempt)


@dataclass(frozen=True, slots=True)
class Progress:
    """What a running task last reported through ``ctx.progress``."""

    fraction: float
    message: str = ""


@dataclass(slots=True)
class JobRecord:
    """One job row as every store keeps it; ``args``/``kwargs``/``result`` are encoded JSON."""

    id: str
    task: str
    queue: str
    args: str
    kwargs: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    run_at: float
    enqueued_at: float
    timeout: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lease_until: float | None = None
    worker_id: str | None = None
    key: str | None = None
    result: str | None = None
    error: JobError | None = None
    progress: Progress | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    history: list[JobError] = field(default_factory=list)
    """The error of every attempt that ended in one, oldest first, at most ``HISTORY_MAX``;
    ``error`` is the last attempt's alone."""
    waiting_reason: WaitingReason | None = None
    """Set on a queued job that a limit holds back; cleared when it starts."""

    def copy(self) -> JobRecord:
        # Spelled out: ``dataclasses.replace`` walks the fields by name on every call, which
        # made copying most of what the memory store does per job.
        return JobRecord(
            id=self.id,
            task=self.task,
            queue=self.queue,
            args=self.args,
            kwargs=self.kwargs,
            state=self.state,
            priority=self.priority,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            run_at=self.run_at,
            enqueued_at=self.enqueued_at,
            timeout=self.timeout,
            started_at=self.started_at,
            finished_at=self.finished_at,
            lease_until=self.lease_until,
            worker_id=self.worker_id,
            key=self.key,
            result=self.result,
            error=self.error,
            progress=self.progress,
            meta=dict(self.meta),
            cancel_requested=self.cancel_requested,
            history=list(self.history),
            waiting_reason=self.waiting_reason,
        )

    def add_history(self, error: JobError, attempt: int) -> None:
        """Append the error of ``attempt``, dropping the oldest entries beyond the cap."""
        self.history.append(error.for_history(attempt))
        if len(self.history) > HISTORY_MAX:
            del self.history[: len(self.history) - HISTORY_MAX]
