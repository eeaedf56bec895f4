"""Workflows in the PostgreSQL store (``Workflows``): each rule runs in the transaction of
the write that triggers it, so a step becomes runnable in the same commit as the success
of its last input, and a crash between two steps loses no edge.

A step is a job with its step columns set (migrations/0005_steps.sql): the inputs it still
waits for, their results as they arrive, the steps its own result goes to (``feeds``).
Jobs of no workflow keep their one-statement paths: the usual outcome statement leaves a
step out as if it were fenced (``AND workflow IS NULL``), and the store, which remembers
the steps it claimed, sends those outcomes here instead, in a transaction that applies
them and then the rules; an outcome the usual statement left out for a step it did not
know of comes here too, so no step's outcome is ever applied without its rules.

A success fills its slot of each step it feeds, one input fewer to wait for, by an
``UPDATE`` of that step's row: the inputs of one chord finishing at once in two workers
take turns on the row lock, the second one counting after the first one's commit, so only
one of them sees the count reach 0, and it releases the step (only while it is queued and
waiting, so a step cancelled meanwhile stays so). A failure or a cancellation walks the
steps after it and cancels those still waiting, naming it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from offload.records import STEP_CANCELLED, STEP_FAILED, JobError, JobRecord, WaitingReason
from offload.stores._common import load_error
from offload.stores.base import NewJob, Outcome
from offload.stores.postgres.flow import FAR
from offload.stores.postgres.rows import complete_params, record

__all__ = ["after", "cancel", "complete", "params", "resume", "settle", "workflow"]

Conn = psycopg.AsyncConnection[TupleRow]

_COMPACT = (",", ":")


def stepped(jobs: Sequence[NewJob]) -> bool:
    return any(job.step is not None for job in jobs)


def params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    """The step columns of an ``enqueue_steps`` batch, NULL for a job of no workflow."""
    links = [job.step for job in jobs]
    return {
        "workflows": [None if s is None else s.workflow for s in links],
        "waits": [None if s is None else s.inputs for s in links],
        "takes": [None if s is None else s.takes.value for s in links],
        "feeds": [None if s is None else json.dumps(s.feeds, separators=_COMPACT) for s in links],
        "on_errors": [None if s is None else s.on_error for s in links],
        "far": FAR,
    }


async def settle(
    conn: Conn,
    q: dict[str, str],
    jobs: Sequence[NewJob],
    records: list[JobRecord],
    written: set[str],
    prepare: bool | None,
) -> tuple[list[JobRecord], list[str]]:
    """After the batch's insert, in its transaction: a workflow whose last step's key was
    on record adds nothing (its steps just written go again, and each of its positions
    gets the holder's record); a step that waits says so. Returns the records and the
    ids dropped."""
    holders: dict[str, JobRecord] = {}
    drop: list[str] = []
    for job, found in zip(jobs, records, strict=True):
        step = job.step
        if step is not None and job.id == step.workflow and job.id not in written:
            holders[step.workflow] = found
    if holders:
        drop = [
            job.id
            for job in jobs
            if job.step is not None and job.step.workflow in holders and job.id in written
        ]
        if drop:
            await conn.execute(q["step_drop"], {"ids": drop}, prepare=prepare)
    out = []
    for job, found in zip(jobs, records, strict=True):
        step = job.step
        if step is not None and step.workflow in holders:
            found = holders[step.workflow]
        elif step is not None and step.inputs > 0 and job.id in written:
            found = dataclasses.replace(found, waiting_reason=WaitingReason.INPUTS)
        out.append(found)
    return out, drop


async def complete(
    conn: Conn, q: dict[str, str], outcomes: Sequence[Outcome], channel: str
) -> tuple[list[TupleRow], list[str]]:
    """Apply ``outcomes`` (some of them steps') and their workflows' rules in one
    transaction; returns the rows applied, ``(id, concurrency key, ...)``, and the queues
    of the steps made runnable."""
    history, values = complete_params(outcomes)
    query = q["complete_steps_history" if history else "complete_steps"]
    async with conn.transaction():
        cur = await conn.execute(query, values)
        rows = await cur.fetchall()
        queues = await after(conn, q, [(r[0], *r[2:]) for r in rows if r[2] is not None], channel)
    return rows, queues


async def after(
    conn: Conn, q: dict[str, str], rows: Sequence[Sequence[Any]], channel: str
) -> list[str]:
    """The rules for steps just finished, inside the transaction that finished them. Each
    row: ``(id, workflow, state, feeds, on_error, task, error, result)`` as the step's
    row now is (a step queued again for a retry has nothing to do). Returns the queues of
    the steps made runnable."""
    edges: list[tuple[str, int, str | None]] = []
    handlers: list[str] = []
    releases: dict[str, str | None] = {}
    for job_id, _, state, feeds, on_error, task, error, result in rows:
        if state == "succeeded":
            edges += [(child, slot, result) for child, slot in feeds or ()]
            if not feeds and on_error is not None:
                # The workflow's last step: its error handler will not be needed.
                handlers.append(on_error)
        elif state == "failed":
            failure = load_error(error)
            why = f": {failure.type}: {failure.message}" if failure is not None else ""
            message = f"not run: step {task!r} (job {job_id}) failed{why}"
            await _cascade(conn, q, feeds, _error(STEP_FAILED, message))
            if on_error is not None:
                releases.setdefault(on_error, json.dumps(job_id))
        elif state == "cancelled":
            message = f"not run: step {task!r} (job {job_id}) was cancelled"
            await _cascade(conn, q, feeds, _error(STEP_CANCELLED, message))
    if edges:
        children = sorted({e[0] for e in edges})
        if len(children) > 1:
            await conn.execute(q["step_lock"], {"ids": children})
        cur = await conn.execute(
            q["step_fill"],
            {
                "children": [e[0] for e in edges],
                "slots": [e[1] for e in edges],
                "results": [e[2] for e in edges],
            },
        )
        for child, waits in await cur.fetchall():
            if waits <= 0:
                releases.setdefault(child, None)
    if handlers:
        await _cascade(conn, q, [[h, 0] for h in handlers], None)
    return await _release(conn, q, releases, channel)


async def _release(
    conn: Conn, q: dict[str, str], releases: dict[str, str | None], channel: str
) -> list[str]:
    """Make the waiting steps ``releases`` runnable (each with the first argument it gets
    instead of its inputs, or ``None``), and wake the workers of their queues on commit;
    returns those queues."""
    if not releases:
        return []
    cur = await conn.execute(
        q["step_release"], {"ids": list(releases), "firsts": list(releases.values())}
    )
    queues = sorted({str(r[0]) for r in await cur.fetchall()})
    for queue in queues:
        await conn.execute(q["notify"], {"channel": channel, "queue": queue})
    return queues


async def _cascade(
    conn: Conn, q: dict[str, str], feeds: Sequence[Sequence[Any]] | None, error: str | None
) -> None:
    if feeds:
        await conn.execute(
            q["step_cascade"],
            {"feeds": json.dumps(list(feeds), separators=_COMPACT), "error": error},
        )


def _error(kind: str, message: str) -> str:
    return json.dumps(JobError(kind, message).to_json())


async def _step_of(conn: Conn, q: dict[str, str], job_id: str) -> tuple[str, Any] | None:
    """The workflow and the feeds of a step; ``None`` for a job of no workflow."""
    cur = await conn.execute(q["step_of"], {"id": job_id})
    row = await cur.fetchone()
    return None if row is None or row[0] is None else (str(row[0]), row[2])


async def cancel(conn: Conn, q: dict[str, str], job_id: str, channel: str) -> list[str]:
    """``Store.cancel`` of a step, in a transaction: the workflow's id cancels every step
    not finished (running ones are asked to stop); another step cancels itself and the
    steps after it, or is asked to stop if it runs (its outcome then cancels them).
    Nothing for a job of no workflow. Returns the queues of the steps made runnable (an
    error handler)."""
    async with conn.transaction():
        step = await _step_of(conn, q, job_id)
        if step is None:
            return []
        workflow, feeds = step
        if job_id == workflow:
            error = _error(STEP_CANCELLED, f"not run: workflow {workflow} was cancelled")
            await conn.execute(q["step_cancel_workflow"], {"workflow": workflow, "error": error})
            return []
        cur = await conn.execute(q["step_cancel"], {"id": job_id})
        row = await cur.fetchone()
        if row is not None and row[0] == "cancelled":
            cancelled = (job_id, workflow, "cancelled", feeds, None, row[1], None, None)
            return await after(conn, q, [cancelled], channel)
    return []


async def resume(conn: Conn, q: dict[str, str], job_id: str, channel: str) -> list[str] | None:
    """``Store.retry`` of a step, in a transaction: every failed or cancelled step of its
    workflow back to queued, runnable if its inputs are in, waiting for them if not.
    Returns the queues of the steps made runnable; ``None`` for a job of no workflow."""
    async with conn.transaction():
        step = await _step_of(conn, q, job_id)
        if step is None:
            return None
        cur = await conn.execute(q["step_resume"], {"workflow": step[0], "far": FAR})
        rows = await cur.fetchall()
        queues = {str(r[2]) for r in rows if r[3]}
        for queue in sorted(queues):
            await conn.execute(q["notify"], {"channel": channel, "queue": queue})
        queues.update(await _release(conn, q, {str(r[0]): None for r in rows if r[1]}, channel))
    return sorted(queues)


async def workflow(conn: Conn, q: dict[str, str], workflow_id: str) -> list[JobRecord]:
    cur = await conn.execute(q["workflow_jobs"], {"workflow": workflow_id})
    return [record(r) for r in await cur.fetchall()]
