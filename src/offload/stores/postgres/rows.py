"""The store's SQL bound to one schema, and the rows it reads turned into job records."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from offload.records import JobRecord, JobState
from offload.stores import sqlfiles
from offload.stores._common import load_error, load_history, load_progress
from offload.stores.postgres.options import PostgresOptions

STATES = {s.value: s for s in JobState}

_RAW = sqlfiles.load("offload.stores.postgres")


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
    # all of them, and with the history appended, for a batch with an error to keep.
    complete = queries["complete"]
    append = queries["append_history"]
    queries["complete"] = _fill(complete, history="", entries="", entry="")
    queries["complete_history"] = _fill(
        complete,
        history=queries["complete_history"].replace(
            "{append}", append.replace("{entry}", "o.entry")
        ),
        entries=queries["complete_entries"],
        entry=queries["complete_entry"],
    )
    queries["reap"] = queries["reap"].replace("{append}", append.replace("{entry}", "r.entry"))
    return queries


def _fill(text: str, **parts: str) -> str:
    for name, part in parts.items():
        text = text.replace("{" + name + "}", part)
    return text


def record(row: Sequence[Any]) -> JobRecord:
    """A job from a row of ``job_columns``."""
    meta = row[20]
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
        row[7],
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
    )


def first_line(exc: BaseException) -> str:
    """What a driver's error says, in one line: the rest is its context for a developer."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
