"""offload: durable background jobs for FastAPI."""

from offload.app import Offload
from offload.canvas import Chain, Chord, Group, Signature, chain, chord, group
from offload.depends import Depends
from offload.errors import (
    Cancel,
    ConfigError,
    Fail,
    InvalidCursor,
    InvalidTransition,
    JobCancelled,
    JobFailed,
    JobNotFound,
    OffloadError,
    PayloadTooLarge,
    QueueFull,
    ResultTimeout,
    Retry,
    StoreUnavailable,
    UnknownSchedule,
    UnknownTask,
)
from offload.jobs import Job, JobContext, JobError, JobState, Progress
from offload.retry import RetryPolicy
from offload.tasks import AsyncTask, Prepared, SyncTask, Task, TaskCall
from offload.worker import Worker

__all__ = [
    "AsyncTask",
    "Cancel",
    "Chain",
    "Chord",
    "ConfigError",
    "Depends",
    "Fail",
    "Group",
    "InvalidCursor",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "Offload",
    "OffloadError",
    "PayloadTooLarge",
    "Prepared",
    "Progress",
    "QueueFull",
    "ResultTimeout",
    "Retry",
    "RetryPolicy",
    "Signature",
    "StoreUnavailable",
    "SyncTask",
    "Task",
    "TaskCall",
    "UnknownSchedule",
    "UnknownTask",
    "Worker",
    "chain",
    "chord",
    "group",
]
