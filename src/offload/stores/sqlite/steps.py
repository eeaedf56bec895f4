"""Workflows in the SQLite store (``Workflows``): every rule runs on the writer thread,
inside the transaction of the write that triggers it, so a step becomes runnable in the
same commit as the success of its last input, and a crash between two steps loses no edge.

A step's row in ``offload_steps`` says how many inputs it still waits for and where its
own result goes (``feeds``). A success fills the slot of each step it feeds; the one whose
last slot it filled gets the inputs put in front of its stored arguments and its due time
back. A failure or a cancellation walks the steps after it and cancels those still
waiting, naming the step. Jobs of no workflow cost one indexed look per batch of outcomes
(``any_step``), and a claim never reads this table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from offload.records import STEP_CANCELLED, STEP_FAILED, JobError, JobRecord, WaitingReason
from offload.stores._common import load_error, queued_record
from offload.stores.base import NewJob, Outcome, OutcomeKind, Takes
from offload.stores.sqlite import ops
from offload.stores.sqlite.flow import FAR
from offload.stores.sqlite.queries import load

__all__ = ["after_failures", "after_outcomes", "cancel", "is_step", "resume", "store", "workflow"]

Q = load("steps.sql")
_INSERT = Q["insert_step"]
_HOLD = Q["hold_step"]
_ANY = Q["any_step"]
_STEPS_OF = Q["steps_of"]
_STEP = Q["step"]
_FILL = Q["fill"]
_ARGS_OF = Q["args_of"]
_RELEASE = Q["release_step"]
_CANCEL_WAITING = Q["cancel_waiting"]
_CANCEL_QUEUED = Q["cancel_queued_step"]
_FAILURE_OF = Q["failure_of"]
_WORKFLOW_JOBS = Q["workflow_jobs"]
_WORKFLOW_STEPS = Q["workflow_steps"]
_REQUEST_CANCEL = Q["request_cancel"]
_RESUME_RUNNABLE = Q["resume_runnable"]
_RESUME_WAITING = Q["resume_waiting"]
_WORKFLOW_OF_KEY = Q["workflow_of_key"]
_STATE_OF = Q["state_of"]
_HANDED = Q["handed"]
_ARGS_ANY = Q["args_any"]
_SET_ARGS = Q["set_args"]
# Ids per ``steps_of`` lookup; below the lowest bound-variable limit (999).
_LOOKUP = 500
# A release (claimed ahead, never started) ends cancelled when its cancel was asked for.
_FINAL = (
    OutcomeKind.SUCCEEDED,
    OutcomeKind.FAILED,
    OutcomeKind.CANCELLED,
    OutcomeKind.RELEASE,
)
_COMPACT = (",", ":")


def known(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> dict[str, str]:
    """The workflows of the call whose last step's key is on record, with the id of the
    job that holds the key: a retried request must not start a workflow twice."""
    found: dict[str, str] = {}
    for new in jobs:
        step = new.step
        if step is not None and new.key is not None and new.id == step.workflow:
            row = conn.execute(_WORKFLOW_OF_KEY, (new.task, new.key)).fetchone()
            if row is not None:
                found[step.workflow] = row[0]
    return found


def store(conn: sqlite3.Connection, jobs: Sequence[NewJob], skip: set[int]) -> None:
    """Write the step rows of the jobs just inserted, and hold those that wait."""
    rows = []
    held = []
    for i, new in enumerate(jobs):
        step = new.step
        if step is None or i in skip:
            continue
        slots = json.dumps([None] * step.inputs) if step.takes is not Takes.ERROR else "[]"
        feeds = json.dumps(step.feeds, separators=_COMPACT)
        rows.append(
            (new.id, step.workflow, step.inputs, step.takes.value, slots, feeds, step.on_error)
        )
        if step.inputs > 0:
            held.append((FAR, new.id))
    conn.executemany(_INSERT, rows)
    conn.executemany(_HOLD, held)


def queued(new: NewJob, now: float) -> JobRecord:
    """The record of a step just stored: one that waits says so."""
    record = queued_record(new, now)
    if new.step is not None and new.step.inputs > 0:
        record = dataclasses.replace(record, waiting_reason=WaitingReason.INPUTS)
    return record


def is_step(conn: sqlite3.Connection, job_id: str) -> bool:
    return conn.execute(_ANY).fetchone() is not None and _row(conn, job_id) is not None


def _row(conn: sqlite3.Connection, job_id: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(_STEP, (job_id,)).fetchone()
    return row


def after_outcomes(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], applied: Sequence[bool], now: float
) -> int:
    """Move the workflows of the steps among ``outcomes`` on; returns how many steps
    became runnable."""
    if conn.execute(_ANY).fetchone() is None:
        return 0
    ended = [o for o, ok in zip(outcomes, applied, strict=True) if ok and o.kind in _FINAL]
    if not ended:
        return 0
    rows: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(ended), _LOOKUP):
        ids = [o.id for o in ended[start : start + _LOOKUP]]
        query = _STEPS_OF.format(marks=",".join("?" * len(ids)))
        rows.update((row[0], row) for row in conn.execute(query, ids))
    released = 0
    # Successes in a row fill their steps' slots together (one write per step fed, not one
    # per input: a chord's members mostly end in the same batch); the order against
    # failures and cancellations stays that of the outcomes.
    fed: list[tuple[tuple[Any, ...], str | None]] = []
    for o in ended:
        row = rows.get(o.id)
        if row is None:
            continue
        if o.kind is OutcomeKind.SUCCEEDED:
            fed.append((row, o.result))
            continue
        if fed:
            released += _succeeded(conn, fed, now)
            fed = []
        if o.kind is OutcomeKind.FAILED:
            released += _failed(conn, row, now)
        elif conn.execute(_STATE_OF, (o.id,)).fetchone() == ("cancelled",):
            _cascade(conn, json.loads(row[5]), _cancelled_error(conn, o.id), now)
    if fed:
        released += _succeeded(conn, fed, now)
    return released


def after_failures(conn: sqlite3.Connection, job_ids: Sequence[str], now: float) -> int:
    """The steps among jobs that just failed for good outside an outcome (a lapsed last
    lease)."""
    if not job_ids or conn.execute(_ANY).fetchone() is None:
        return 0
    released = 0
    for job_id in job_ids:
        row = _row(conn, job_id)
        if row is not None:
            released += _failed(conn, row, now)
    return released


def _succeeded(
    conn: sqlite3.Connection, succeeded: Sequence[tuple[tuple[Any, ...], str | None]], now: float
) -> int:
    slots: dict[str, list[tuple[int, str | None]]] = {}
    for row, result in succeeded:
        feeds = json.loads(row[5])
        for child, slot in feeds:
            slots.setdefault(child, []).append((slot, result))
        handler = row[6]
        if not feeds and handler is not None:
            # The workflow's last step: its error handler will not be needed.
            for (queue,) in conn.execute(_CANCEL_WAITING, (now, None, handler)).fetchall():
                ops.tally_move(conn, queue, "queued", "cancelled")
    released = 0
    for child, filling in slots.items():
        params: list[Any] = []
        for slot, result in filling:
            params += (f"$[{slot}]", result)
        params += (len(filling), child)
        filled = conn.execute(_fill(len(filling)), params).fetchone()
        if filled is not None and filled[0] == 0:
            released += _release(conn, child, Takes(filled[1]), filled[2], now)
    return released


@functools.cache
def _fill(n: int) -> str:
    """``fill`` for ``n`` slots of one step at once."""
    return _FILL.format(pairs=", ".join(["?, json(coalesce(?, 'null'))"] * n))


def _failed(conn: sqlite3.Connection, row: tuple[Any, ...], now: float) -> int:
    job_id = row[0]
    task, raw = conn.execute(_FAILURE_OF, (job_id,)).fetchone()
    error = load_error(raw)
    why = f": {error.type}: {error.message}" if error is not None else ""
    message = f"not run: step {task!r} (job {job_id}) failed{why}"
    _cascade(conn, json.loads(row[5]), _error(STEP_FAILED, message), now)
    handler = row[6]
    if handler is None:
        return 0
    return _release(conn, handler, Takes.ERROR, json.dumps([job_id]), now)


def _cancelled_error(conn: sqlite3.Connection, job_id: str) -> str:
    task = conn.execute(_FAILURE_OF, (job_id,)).fetchone()[0]
    return _error(STEP_CANCELLED, f"not run: step {task!r} (job {job_id}) was cancelled")


def _error(kind: str, message: str) -> str:
    return json.dumps(JobError(kind, message).to_json())


def _splice(conn: sqlite3.Connection, job_id: str, takes: Takes, inputs: str) -> None:
    args = conn.execute(_ARGS_ANY, (job_id,)).fetchone()[0]
    values = json.loads(inputs)
    first = values if takes is Takes.ALL else values[0]
    conn.execute(_SET_ARGS, (json.dumps([first, *json.loads(args)], separators=_COMPACT), job_id))
    conn.execute(_HANDED, (job_id,))


def _release(conn: sqlite3.Connection, job_id: str, takes: Takes, inputs: str, now: float) -> int:
    """Put the inputs in front of the waiting step's arguments and make it runnable."""
    found = conn.execute(_ARGS_OF, (job_id,)).fetchone()
    if found is None:
        return 0  # cancelled meanwhile: it stays so
    args = found[0]
    if takes is not Takes.NONE:
        values = json.loads(inputs)
        first = values if takes is Takes.ALL else values[0]
        args = json.dumps([first, *json.loads(args)], separators=_COMPACT)
    moved = len(conn.execute(_RELEASE, (args, now, now, job_id)).fetchall())
    if moved and takes is not Takes.ERROR:
        # Handed over: a retry of the step runs it with these arguments, as they are.
        conn.execute(_HANDED, (job_id,))
    return moved


def _cascade(conn: sqlite3.Connection, feeds: list[list[Any]], error: str, now: float) -> None:
    """Cancel the waiting steps after a step that failed or was cancelled, and theirs."""
    frontier = [child for child, _ in feeds]
    while frontier:
        after: list[str] = []
        for job_id in frontier:
            for (queue,) in conn.execute(_CANCEL_WAITING, (now, error, job_id)).fetchall():
                ops.tally_move(conn, queue, "queued", "cancelled")
                row = _row(conn, job_id)
                if row is not None:
                    after += [child for child, _ in json.loads(row[5])]
        frontier = after


def cancel(conn: sqlite3.Connection, job_id: str, now: float) -> None:
    """``Store.cancel`` of a step: the workflow's id cancels every step not finished
    (running ones are asked to stop); another step cancels itself and what comes after."""
    row = _row(conn, job_id)
    assert row is not None
    workflow = row[1]
    if job_id == workflow:
        error = _error(STEP_CANCELLED, f"not run: workflow {workflow} was cancelled")
        for step_id, _, state, _, _ in conn.execute(_WORKFLOW_STEPS, (workflow,)).fetchall():
            if state == "running":
                conn.execute(_REQUEST_CANCEL, (step_id,))
            elif state == "queued":
                why = None if step_id == workflow else error
                for (queue,) in conn.execute(_CANCEL_QUEUED, (now, why, step_id)).fetchall():
                    ops.tally_move(conn, queue, "queued", "cancelled")
        return
    cancelled = conn.execute(_CANCEL_QUEUED, (now, None, job_id)).fetchall()
    for (queue,) in cancelled:
        ops.tally_move(conn, queue, "queued", "cancelled")
    if cancelled:
        _cascade(conn, json.loads(row[5]), _cancelled_error(conn, job_id), now)
    else:
        conn.execute(_REQUEST_CANCEL, (job_id,))


def resume(conn: sqlite3.Connection, job_id: str, now: float) -> None:
    """``Store.retry`` of a step: every failed or cancelled step of its workflow goes back
    to queued, runnable when its inputs are in, waiting for them when not."""
    row = _row(conn, job_id)
    assert row is not None
    for step_id, waits, state, queue, _ in conn.execute(_WORKFLOW_STEPS, (row[1],)).fetchall():
        if state not in ("failed", "cancelled"):
            continue
        if waits == 0:
            moved = conn.execute(_RESUME_RUNNABLE, (now, step_id)).rowcount
            step = _row(conn, step_id)
            if moved and step is not None and Takes(step[3]) in (Takes.ONE, Takes.ALL):
                # Cancelled while it waited, its inputs came in all the same: hand them
                # over now, as a release would have.
                _splice(conn, step_id, Takes(step[3]), step[4])
        else:
            moved = conn.execute(_RESUME_WAITING, (FAR, now, step_id)).rowcount
        if moved:
            ops.tally_move(conn, queue, state, "queued")


def workflow(conn: sqlite3.Connection, workflow_id: str) -> list[JobRecord]:
    return [ops.read_record(row) for row in conn.execute(_WORKFLOW_JOBS, (workflow_id,))]
