"""``Background``: ``BackgroundTasks.add_task`` for durable jobs.

Starlette runs background tasks after the response has gone out, so a crash in between loses
them silently. Here the job is committed to the store before the endpoint returns, so a 2xx
is only ever sent for a job that is stored (DESIGN §1.1).
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, HTTPException, status

from offload.errors import PayloadTooLarge, QueueFull, StoreUnavailable
from offload.fastapi.outage import outage_of
from offload.fastapi.schemas import Detail
from offload.jobs import Job
from offload.tasks import Enqueuer, Prepared, Task, TaskCall

__all__ = ["ENQUEUE_RESPONSES", "UNAVAILABLE_RESPONSE", "Background", "DurableTasks"]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("offload.fastapi")

# A store outage is usually brief (a restart, a failover); tell clients when to try again
# rather than letting them hammer the endpoint.
RETRY_AFTER_SECONDS = 5

UNAVAILABLE_RESPONSE: dict[str, Any] = {
    "model": Detail,
    "description": "the job store cannot be reached; nothing was changed or accepted",
    "headers": {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer"},
        }
    },
}

# The answers ``add_task`` adds to an endpoint's own, for its OpenAPI entry:
# ``@app.post("/signup", responses=ENQUEUE_RESPONSES)``, so generated clients know them.
ENQUEUE_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {
        "model": Detail,
        "description": "the request body, or the job made of it, is over the size limit",
    },
    429: {
        "model": Detail,
        "description": "the backlog is full (max_queued); nothing was accepted, try again "
        "after Retry-After seconds",
        "headers": UNAVAILABLE_RESPONSE["headers"],
    },
    503: UNAVAILABLE_RESPONSE,
}


class DurableTasks:
    """The jobs one request enqueued; injected by annotating a parameter with ``Background``.

    ``add_task`` is a coroutine, unlike Starlette's. FastAPI runs the exit code of ``yield``
    dependencies after the response has been sent (and its ``scope="function"`` variant only
    exists in recent versions), so collecting calls and storing them later could send a 2xx
    for a job that then fails to store. Awaiting the store inside the endpoint is the one
    point where the commit happens before the response on every FastAPI version, where a
    failure still decides the response, and where the job id is known in time to return it.
    """

    def __init__(self) -> None:
        self.jobs: list[Job[Any]] = []

    async def add_task(
        self, task: Task[P, R] | TaskCall[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Job[R]:
        """Store a job for ``task(*args, **kwargs)`` and return it once it is durable.

        Arguments are checked against the task's signature first: a mismatch is a bug in the
        caller and raises ``TypeError``. Arguments over the task's payload limit come from
        what the client sent, so they answer 413. A store outage becomes a 503 so that the
        client knows the work was not accepted and can retry.
        """
        app, prepared = _prepare(task, args, kwargs)
        try:
            (job,) = await app.enqueue_many([prepared])
        except QueueFull as exc:
            raise too_many(exc) from exc
        except (StoreUnavailable, OSError) as exc:
            raise _unavailable(app, prepared, exc) from exc
        outage_of(app).answered()
        self.jobs.append(job)
        return job

    def add_task_sync(
        self, task: Task[P, R] | TaskCall[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Job[R]:
        """``add_task`` for a ``def`` endpoint, which FastAPI runs in a worker thread."""
        app, prepared = _prepare(task, args, kwargs)
        try:
            (job,) = app.enqueue_many_sync([prepared])
        except QueueFull as exc:
            raise too_many(exc) from exc
        except (StoreUnavailable, OSError) as exc:
            raise _unavailable(app, prepared, exc) from exc
        outage_of(app).answered()
        self.jobs.append(job)
        return job


def _prepare(
    task: Task[P, R] | TaskCall[P, R], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Enqueuer, Prepared[R]]:
    try:
        if isinstance(task, TaskCall):
            return task.task.app, task.prepare(*args, **kwargs)
        if isinstance(task, Task):
            return task.app, task.prepare(*args, **kwargs)
    except PayloadTooLarge as exc:
        raise _too_large(exc) from exc
    name = getattr(task, "__qualname__", repr(task))
    raise TypeError(
        f"add_task() needs a registered task, got {name}; decorate the function with "
        "@jobs.task so that a worker can find it by name"
    )


def _too_large(exc: PayloadTooLarge) -> HTTPException:
    # The full message (which names the server's settings) is for the log, not the client.
    log.info(
        "job refused: its arguments are over the payload limit",
        extra={"action": "fastapi.payload_too_large", "task": exc.task, "error": str(exc)},
    )
    return HTTPException(
        413,
        detail=f"the data in this request makes a job of {exc.size:,} bytes, over the limit "
        f"of {exc.limit:,} bytes; send less data",
    )


def too_many(exc: QueueFull) -> HTTPException:
    """429 with ``Retry-After`` (whole seconds, at least 1): the client's work was not
    accepted, and is welcome again then."""
    log.info(
        "job refused: the backlog is full",
        extra={"action": "fastapi.queue_full", "error": str(exc)},
    )
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"{exc.what} is full ({exc.limit:,} jobs waiting); nothing was accepted, "
        "retry later",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
    )


def _unavailable(app: Enqueuer, prepared: Prepared[Any], exc: BaseException) -> HTTPException:
    # One line per outage, not a traceback per request (see offload.fastapi.outage).
    outage_of(app).failed(exc, task=prepared.job.task)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail="the job store is unavailable, so the work was not accepted; "
        "retry the request later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _durable_tasks() -> DurableTasks:
    # A function rather than the class itself: FastAPI would otherwise read the class's
    # __init__ signature for request parameters. A coroutine, because FastAPI runs a plain
    # function dependency in its thread pool: a thread hop on every request, which cost
    # the endpoint more than storing its job (measured under wrk: see docs/benchmarks.md).
    return DurableTasks()


Background = Annotated[DurableTasks, Depends(_durable_tasks)]
"""Annotate an endpoint parameter with this to enqueue durable jobs from it."""
