"""The store's SQL bound to one schema, and the rows it reads turned into job records."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from offload.records import JobRecord, JobState, WaitingReason
from offload.stores import sqlfiles
from offload.stores._common import (
    HISTORY_KINDS,
    dump_error,
    history_entry,
    load_error,
    load_history,
    load_progress,
)
from offload.stores.base import NewJob, Outcome
from offload.stores.postgres.options import PostgresOptions

STATES = {s.value: s for s in JobState}

_RAW = sqlfiles.load("offload.stores.postgres")
_STEPS = sqlfiles.load("offload.stores.postgres", "steps.sql")
assert not set(_RAW) & set(_STEPS), "a query named in both queries.sql and steps.sql"
_RAW |= _STEPS


def is_job_id(job_id: str) -> bool:
    """Whether ``job_id`` can name a row at all: the id column is a uuid, and the server
    refuses any other text with an error, where every store answers "no such job"."""
    try:
        uuid.UUID(job_id)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def queries_for(opts: PostgresOptions) -> dict[str, str]:
    """The named queries with the schema and the job columns filled in."""
    columns = _RAW["job_columns"]
    queries = {
        name: text.replace("{columns}", columns).replace("{schema}", opts.quoted_schema)
        for name, text in _RAW.items()
    }
    # The outcome statement twice: as it is, for the batches of successes that are nearly
    # all of them, and with the history appended, for a batch with an error to keep; and
    # both again for a batch with workflow steps (steps.py), which the first two leave out.
    complete = queries["complete"]
    append = queries["append_history"]
    history = {
        "history": queries["complete_history"].replace(
            "{append}", append.replace("{entry}", "o.entry")
        ),
        "entries": queries["complete_entries"],
        "entry": queries["complete_entry"],
    }
    plain = {"history": "", "entries": "", "entry": ""}
    guard = {"guard": "AND j.workflow IS NULL", "tail": ""}
    stepped = {"guard": "", "tail": queries["step_outcome"]}
    queries["complete"] = _fill(complete, **plain, **guard)
    queries["complete_history"] = _fill(complete, **history, **guard)
    queries["complete_steps"] = _fill(complete, **plain, **stepped)
    queries["complete_steps_history"] = _fill(complete, **history, **stepped)
    queries["reap"] = _fill(
        queries["reap"], append=append.replace("{entry}", "r.entry"), tail=queries["step_outcome"]
    )
    # The enqueue statement twice too: as it is, and with each job's limits, for a batch
    # that holds a limited job (a NULL per column for the others in it).
    enqueue, flow_columns = queries["enqueue"], queries["enqueue_flow_columns"]
    queries["enqueue"] = _fill(
        enqueue, flow_columns="", flow_values="", flow_arrays="", flow_names=""
    )
    queries["enqueue_limited"] = _fill(
        enqueue,
        flow_columns=flow_columns,
        flow_values=queries["enqueue_flow_values"],
        flow_arrays=queries["enqueue_flow_arrays"],
        flow_names=flow_columns,
    )
    return queries


def _fill(text: str, **parts: str) -> str:
    for name, part in parts.items():
        text = text.replace("{" + name + "}", part)
    return text


def record(row: Sequence[Any]) -> JobRecord:
    """A job from a row of ``job_columns``; the reads of whole jobs add its history, why it
    waits and, for a job held for a slot, its due time (which it shows as its run_at, not
    the far one that keeps claims off it)."""
    meta = row[20]
    waiting = None
    run_at = row[7]
    if len(row) > 23:
        if row[23] is not None:
            waiting = WaitingReason(row[23])
        if row[24] is not None:
            run_at = row[24]
    return JobRecord(
        row[0],
        row[1],
        row[2],
        row[15],
        row[16],
        STATES[row[3]],
        row[4],
        row[5],
        row[6],
        run_at,
        row[8],
        timeout=row[9],
        started_at=row[10],
        finished_at=row[11],
        lease_until=row[12],
        worker_id=row[13],
        key=row[14],
        result=row[17],
        error=load_error(row[18]),
        progress=load_progress(row[19]),
        meta={} if meta == "{}" else json.loads(meta),
        cancel_requested=row[21],
        # Only the reads of whole jobs select it: a claim's rows stop before it.
        history=load_history(row[22]) if len(row) > 22 else [],
        waiting_reason=waiting,
    )


def complete_params(outcomes: Sequence[Outcome]) -> tuple[bool, dict[str, Any]]:
    """The parameters of ``complete``, and whether the batch needs its ``_history`` form
    (an error to keep)."""
    params: dict[str, Any] = {
        "ids": [o.id for o in outcomes],
        "workers": [o.worker_id for o in outcomes],
        "attempts": [o.attempt for o in outcomes],
        "kinds": [o.kind.value for o in outcomes],
        "results": [o.result for o in outcomes],
        "errors": [dump_error(o.error) for o in outcomes],
        "delays": [o.delay for o in outcomes],
    }
    if not any(o.error is not None and o.kind in HISTORY_KINDS for o in outcomes):
        return False, params
    params["entries"] = [
        history_entry(o.error, o.attempt)
        if o.error is not None and o.kind in HISTORY_KINDS
        else None
        for o in outcomes
    ]
    return True, params


def enqueue_params(jobs: Sequence[NewJob], channel: str) -> dict[str, Any]:
    """The parameters of ``enqueue``: a column of values per array."""
    return {
        "ids": [j.id for j in jobs],
        "tasks": [j.task for j in jobs],
        "queues": [j.queue for j in jobs],
        "priorities": [j.priority for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        # As floats: an int beside floats would make psycopg refuse a mixed list.
        "run_ats": [None if j.run_at is None else float(j.run_at) for j in jobs],
        "delays": [float(j.delay) for j in jobs],
        "timeouts": [None if j.timeout is None else float(j.timeout) for j in jobs],
        "keys": [j.key for j in jobs],
        "args": [j.args for j in jobs],
        "kwargs": [j.kwargs for j in jobs],
        "metas": [json.dumps(j.meta) if j.meta else None for j in jobs],
        "channel": channel,
    }


def one_params(job: NewJob, channel: str) -> dict[str, Any]:
    """The parameters of ``enqueue_one``."""
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "priority": job.priority,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at,
        "delay": job.delay,
        "timeout": job.timeout,
        "key": job.key,
        "args": job.args,
        "kwargs": job.kwargs,
        "meta": json.dumps(job.meta) if job.meta else None,
        "channel": channel,
    }


def first_line(exc: BaseException) -> str:
    """What a driver's error says, in one line: the rest is its context for a developer."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
