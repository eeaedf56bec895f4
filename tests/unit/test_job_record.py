"""``JobRecord.copy``: every field carried over, the meta dict not shared."""

from __future__ import annotations

import dataclasses

from offload.jobs import JobError, JobRecord, JobState, Progress


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
    )
    defaults = JobRecord("", "", "", "", "", JobState.QUEUED, 0, 0, 0, 0.0, 0.0)
    # Every field above differs from its default, so a field the copy forgot would show.
    for f in dataclasses.fields(JobRecord):
        assert getattr(record, f.name) != getattr(defaults, f.name), f.name
    copied = record.copy()
    assert copied == record
    assert copied.meta is not record.meta
