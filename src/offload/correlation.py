"""Ids that follow a request into the jobs it enqueues, and those jobs into their own (§9).

One context variable holds the fields to correlate by. The HTTP middleware binds the request
id (and a W3C ``traceparent``) for the length of a request; the worker binds the job's ids for
the length of an attempt. ``Offload`` reads it at enqueue (:func:`enqueue_meta`), so a job
carries the ids of whatever enqueued it, and the log renderer merges it into every line, so
the lines a task writes itself carry them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any, Final

from offload.jobs import JobRecord

__all__ = [
    "PARENT_JOB_ID",
    "REQUEST_ID",
    "TRACEPARENT",
    "bind",
    "bound",
    "current",
    "enqueue_meta",
    "job_fields",
    "reset",
]

REQUEST_ID: Final = "request_id"
TRACEPARENT: Final = "traceparent"
PARENT_JOB_ID: Final = "parent_job_id"

_EMPTY: Mapping[str, Any] = {}
_fields: ContextVar[Mapping[str, Any]] = ContextVar("offload_correlation", default=_EMPTY)


def current() -> Mapping[str, Any]:
    """The fields bound in this context (read-only; empty when nothing is bound)."""
    return _fields.get()


def bind(fields: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """Add ``fields`` to this context; pass the token to :func:`reset` to undo."""
    return _fields.set({**_fields.get(), **fields})


def reset(token: Token[Mapping[str, Any]]) -> None:
    _fields.reset(token)


@contextlib.contextmanager
def bound(fields: Mapping[str, Any]) -> Iterator[None]:
    token = bind(fields)
    try:
        yield
    finally:
        _fields.reset(token)


def enqueue_meta() -> dict[str, Any] | None:
    """What a job enqueued in this context records about its origin (an ``Offload`` meta hook).

    The request id and trace context pass through unchanged; a job running here becomes the
    new job's parent.
    """
    fields = _fields.get()
    if not fields:
        return None
    meta: dict[str, Any] = {}
    for key in (REQUEST_ID, TRACEPARENT):
        value = fields.get(key)
        if value:
            meta[key] = value
    job_id = fields.get("job_id")
    if job_id:
        meta[PARENT_JOB_ID] = job_id
    return meta or None


def job_fields(record: JobRecord) -> dict[str, Any]:
    """The fields bound while an attempt of ``record`` runs, as its log lines show them."""
    fields: dict[str, Any] = {
        "job_id": record.id,
        "task": record.task,
        "attempt": record.attempt,
        "queue": record.queue,
    }
    meta = record.meta
    if meta:
        for key in (REQUEST_ID, PARENT_JOB_ID, TRACEPARENT):
            value = meta.get(key)
            if value:
                fields[key] = value
    return fields
