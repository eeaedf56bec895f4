"""Store inputs for the conformance suite: new jobs and outcomes with test defaults."""

from __future__ import annotations

from typing import Any

from offload.ids import new_id
from offload.stores.base import NewJob, Outcome, OutcomeKind

TTL = 30.0


def new_job(
    task: str = "t",
    *,
    queue: str = "default",
    priority: int = 0,
    delay: float = 0.0,
    key: str | None = None,
    max_attempts: int = 3,
    args: str = "[]",
    kwargs: str = "{}",
    meta: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> NewJob:
    return NewJob(
        id=new_id(),
        task=task,
        queue=queue,
        args=args,
        kwargs=kwargs,
        priority=priority,
        max_attempts=max_attempts,
        delay=delay,
        key=key,
        meta=meta or {},
        timeout=timeout,
    )


def done(job_id: str, worker: str, attempt: int = 1, result: str = "null") -> Outcome:
    return Outcome(job_id, worker, attempt, OutcomeKind.SUCCEEDED, result=result)
