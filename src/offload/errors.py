"""The exceptions offload raises, and the control-flow exceptions tasks raise.

Every class's docstring is its default message, so ``raise ConfigError()`` still says something
useful; callers pass a more specific message naming the fix whenever they have one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class OffloadError(Exception):
    """An offload operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or type(self).__name__).strip())


class ConfigError(OffloadError, ValueError):
    """The configuration is invalid."""


class StoreUnavailable(OffloadError):
    """The job store cannot be reached; nothing was written. Check that it is running."""


class QueueFull(OffloadError):
    """An enqueue past a ``max_queued`` limit: nothing of the call was stored. Try again in
    ``retry_after`` seconds (a suggestion: when the backlog may have shrunk); the FastAPI
    adapter answers it as 429 with ``Retry-After``."""

    def __init__(self, what: str, limit: int, queued: int, retry_after: float) -> None:
        self.what = what
        self.limit = limit
        self.queued = queued
        self.retry_after = retry_after
        super().__init__(
            f"{what} holds {queued:,} queued jobs, its max_queued is {limit:,}: nothing was "
            f"stored; try again in {retry_after:.0f} s"
        )


class PayloadTooLarge(OffloadError, ValueError):
    """A job's arguments encode to more JSON than the payload limit allows; nothing was stored.

    A store keeps every job's arguments in memory or on disk until the job is purged, so a
    large value belongs in a file, object storage or a database row, with a reference to it
    passed to the task.
    """

    def __init__(self, task: str, size: int, limit: int) -> None:
        self.task = task
        self.size = size
        self.limit = limit
        super().__init__(
            f"the arguments of task {task!r} are {_amount(size)} as JSON, over the limit of "
            f"{_amount(limit)}; pass a reference to large data (a file, an object storage key, "
            "a row id) instead of the data, or raise the limit with "
            "Offload(max_payload=...) or @jobs.task(max_payload=...)"
        )


def _amount(size: int) -> str:
    """Bytes as a person reads them, with the exact count that a limit is set in."""
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB ({size:,} bytes)"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.1f} KiB ({size:,} bytes)"
    return f"{size:,} bytes"


class UnknownTask(OffloadError, LookupError):
    """No task is registered under that name; decorate the function with @jobs.task."""


class UnknownSchedule(OffloadError, LookupError):
    """No schedule is declared under that name; declare it with @jobs.periodic."""


class JobNotFound(OffloadError, LookupError):
    """No job with that id exists (it may have been purged)."""


class InvalidTransition(OffloadError):
    """The job is not in a state that allows this change."""


class InvalidCursor(OffloadError, ValueError):
    """A page cursor that no listing handed out (mistyped, cut short, or from another store)."""


class JobFailed(OffloadError):
    """The job ended in state failed; ``error_type``, ``message`` and ``traceback`` say why."""

    def __init__(
        self, job_id: str, error_type: str, message: str, traceback: str | None = None
    ) -> None:
        self.job_id = job_id
        self.error_type = error_type
        self.error_message = message
        self.traceback = traceback
        super().__init__(f"job {job_id} failed: {error_type}: {message}")


class JobCancelled(OffloadError):
    """The job was cancelled before it produced a result."""


class ResultTimeout(OffloadError, TimeoutError):
    """The job did not finish within the time given to ``Job.result``."""


# --- control flow raised by tasks -------------------------------------------------------


class Retry(Exception):  # a command, like StopIteration: "Error" would mislead
    """Raised by a task to run it again later; counts as an attempt."""

    def __init__(self, after: float | timedelta | None = None, reason: str = "") -> None:
        self.after = after.total_seconds() if isinstance(after, timedelta) else after
        self.reason = reason
        super().__init__(reason or f"retry requested (after={self.after})")


class Cancel(Exception):  # a command, not an error
    """Raised by a task to end its job as cancelled; no further attempts."""


class Fail(Exception):  # a command, not an error
    """Raised by a task to end its job as failed at once, skipping remaining retries."""

    def __init__(self, reason: str = "failed by the task", **details: Any) -> None:
        self.reason = reason
        self.details = details
        super().__init__(reason)
