"""Job records: copies carry every field; a prepared call and a fresh enqueue map each field."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Annotated

from offload import Offload
from offload.jobs import JobError, JobRecord, JobState, Progress
from offload.records import WaitingReason
from offload.redaction import SECRET_ARGS_META, Secret
from offload.stores._common import queued_record
from offload.stores.base import NewJob


def test_copy_carries_every_field_and_owns_its_meta() -> None:
    record = JobRecord(
        id="i",
        task="t",
        queue="q",
        args="[1]",
        kwargs='{"a": 2}',
        state=JobState.RUNNING,
        priority=3,
        attempt=2,
        max_attempts=5,
        run_at=1.5,
        enqueued_at=1.0,
        timeout=9.0,
        started_at=2.0,
        finished_at=3.0,
        lease_until=4.0,
        worker_id="w",
        key="k",
        result='"r"',
        error=JobError("E", "m", "tb"),
        progress=Progress(0.5, "half"),
        meta={"request_id": "x"},
        cancel_requested=True,
        history=[JobError("E", "m", "tb", 1)],
        waiting_reason=WaitingReason.RATE_LIMIT,
    )
    defaults = JobRecord("", "", "", "", "", JobState.QUEUED, 0, 0, 0, 0.0, 0.0)
    # Every field above differs from its default, so a field the copy forgot would show.
    for f in dataclasses.fields(JobRecord):
        assert getattr(record, f.name) != getattr(defaults, f.name), f.name
    copied = record.copy()
    assert copied == record
    assert copied.meta is not record.meta
    assert copied.history is not record.history


def test_queued_record_maps_each_field() -> None:
    new = NewJob(
        id="i",
        task="t",
        queue="q",
        args="[1]",
        kwargs='{"a": 2}',
        priority=3,
        max_attempts=4,
        delay=5.0,
        timeout=6.0,
        key="k",
        meta={"m": 1},
    )
    expected = JobRecord(
        id="i",
        task="t",
        queue="q",
        args="[1]",
        kwargs='{"a": 2}',
        state=JobState.QUEUED,
        priority=3,
        attempt=0,
        max_attempts=4,
        run_at=105.0,
        enqueued_at=100.0,
        timeout=6.0,
        key="k",
        meta={"m": 1},
    )
    got = queued_record(new, 100.0)
    assert expected == got
    assert got.meta is not new.meta
    new.run_at = 42.0
    assert 42.0 == queued_record(new, 100.0).run_at


def test_prepare_maps_each_option() -> None:
    jobs = Offload("memory://", embedded_worker=False)

    @jobs.task(queue="q0", priority=1, retries=2, timeout=9.0)
    async def send(to: str, *, token: Annotated[str, Secret]) -> None:
        return None

    plain = send.prepare("a", token="s")
    assert ("send", "q0", 1, 3, None, 0.0, 9.0, None) == (
        plain.job.task.rsplit(".", 1)[-1],
        plain.job.queue,
        plain.job.priority,
        plain.job.max_attempts,
        plain.job.run_at,
        plain.job.delay,
        plain.job.timeout,
        plain.job.key,
    )
    stored = (json.loads(plain.job.args), json.loads(plain.job.kwargs))
    assert ([], {"to": "a", "token": "s"}) == stored
    assert {SECRET_ARGS_META: ["token"]} == plain.job.meta
    at = datetime(2030, 1, 1, tzinfo=UTC)
    opts = send.options(queue="q1", priority=7, retries=0, timeout=1.5, key="k", run_at=at)
    job = opts.prepare("b", token="t").job
    assert ("q1", 7, 1, at.timestamp(), 1.5, "k") == (
        job.queue,
        job.priority,
        job.max_attempts,
        job.run_at,
        job.timeout,
        job.key,
    )
    assert 30.0 == send.options(delay=30).prepare("c", token="u").job.delay


def test_an_error_reads_back_with_or_without_its_attempt() -> None:
    """A last error stored before attempts were kept reads as before, and its JSON is
    unchanged; a history entry keeps its attempt and the end of a long traceback."""
    old = {"type": "E", "message": "m", "traceback": None}
    assert JobError("E", "m") == JobError.from_json(old)
    assert old == JobError("E", "m").to_json()
    entry = JobError("E", "m", "x" * 9000 + "E: m").for_history(3)
    assert entry == JobError.from_json(json.loads(json.dumps(entry.to_json())))
    assert 3 == entry.attempt
    assert entry.traceback is not None
    assert 8000 == len(entry.traceback)
    assert entry.traceback.endswith("E: m")
