"""Workflows in the memory store (``Workflows``), for users' unit tests and the eager mode:
the rules of ``stores.base.Workflows`` on the store's own records, applied inside the call
that triggers them (the memory store has no concurrency of its own to guard against).

A step that waits is a queued record with ``waiting_reason`` ``inputs`` that is not in the
store's claim heaps; releasing it puts its inputs in front of its arguments and indexes it
as any job that has just become queued.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from offload.records import STEP_CANCELLED, STEP_FAILED, JobError, JobRecord, JobState
from offload.records import WaitingReason as Waiting
from offload.stores.base import NewJob, Outcome, OutcomeKind, StepLink, Takes

__all__ = ["Steps"]

_COMPACT = (",", ":")


@dataclass(slots=True)
class _Step:
    link: StepLink
    waits: int
    inputs: list[Any] = field(default_factory=list)


class Steps:
    """The step rows of one memory store; ``index`` puts a released job in the claim
    heaps."""

    def __init__(self, jobs: dict[str, JobRecord], index: Callable[[JobRecord], None]) -> None:
        self._jobs = jobs
        self._index = index
        self._steps: dict[str, _Step] = {}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._steps

    def known(self, jobs: Sequence[NewJob], keys: dict[tuple[str, str], str]) -> dict[str, str]:
        """Workflows of the call whose last step's key is on record, with that job's id."""
        found = {}
        for new in jobs:
            step = new.step
            if step is not None and new.key is not None and new.id == step.workflow:
                existing = keys.get((new.task, new.key))
                if existing is not None and existing in self._jobs:
                    found[step.workflow] = existing
        return found

    def add(self, new: NewJob, record: JobRecord) -> bool:
        """Keep the step of a job just stored; False when it waits (not to be indexed)."""
        link = new.step
        assert link is not None
        slots = 0 if link.takes is Takes.ERROR else link.inputs
        self._steps[record.id] = _Step(link, link.inputs, [None] * slots)
        if link.inputs == 0:
            return True
        record.waiting_reason = Waiting.INPUTS
        return False

    def ended(self, job: JobRecord, outcome: Outcome, now: float) -> None:
        step = self._steps.get(job.id)
        if step is None:
            return
        if outcome.kind is OutcomeKind.SUCCEEDED:
            self._succeeded(step, job, now)
        elif outcome.kind is OutcomeKind.FAILED:
            self.failed(job, now)
        elif job.state is JobState.CANCELLED:
            self._cascade(step, _error(STEP_CANCELLED, f"step {job.task!r} (job {job.id})"), now)

    def _succeeded(self, step: _Step, job: JobRecord, now: float) -> None:
        value = None if job.result is None else json.loads(job.result)
        for child_id, slot in step.link.feeds:
            child = self._steps.get(child_id)
            if child is None:
                continue
            child.inputs[slot] = value
            child.waits -= 1
            if child.waits == 0:
                self._release(child_id, child.link.takes, child.inputs, now)
        handler = step.link.on_error
        if not step.link.feeds and handler is not None:
            self._cancel_waiting(handler, None, now)

    def failed(self, job: JobRecord, now: float) -> None:
        """A step that ended failed (an outcome, or its last lease lapsing)."""
        step = self._steps.get(job.id)
        if step is None:
            return
        error = job.error
        why = "" if error is None else f": {error.type}: {error.message}"
        self._cascade(step, _error(STEP_FAILED, f"step {job.task!r} (job {job.id})", why), now)
        if step.link.on_error is not None:
            self._release(step.link.on_error, Takes.ERROR, [job.id], now)

    def _release(self, job_id: str, takes: Takes, inputs: list[Any], now: float) -> None:
        job = self._jobs.get(job_id)
        if job is None or not _waiting(job):
            return
        if takes is not Takes.NONE:
            first = inputs if takes is Takes.ALL else inputs[0]
            job.args = json.dumps([first, *json.loads(job.args)], separators=_COMPACT)
        job.waiting_reason = None
        job.run_at = max(job.run_at, now)
        self._index(job)

    def _cancel_waiting(self, job_id: str, error: JobError | None, now: float) -> bool:
        job = self._jobs.get(job_id)
        if job is None or not _waiting(job):
            return False
        job.state = JobState.CANCELLED
        job.waiting_reason = None
        job.error = error
        job.finished_at = now
        return True

    def _cascade(self, step: _Step, error: JobError, now: float) -> None:
        frontier = [child for child, _ in step.link.feeds]
        while frontier:
            after: list[str] = []
            for job_id in frontier:
                if self._cancel_waiting(job_id, error, now):
                    after += [child for child, _ in self._steps[job_id].link.feeds]
            frontier = after

    def cancel(self, job: JobRecord, now: float) -> None:
        """``Store.cancel`` of a step (see ``stores.base.Workflows``)."""
        step = self._steps[job.id]
        workflow = step.link.workflow
        if job.id == workflow:
            error = JobError(STEP_CANCELLED, f"not run: workflow {workflow} was cancelled")
            for other in self.workflow(workflow):
                if other.state is JobState.RUNNING:
                    other.cancel_requested = True
                elif other.state is JobState.QUEUED:
                    other.state = JobState.CANCELLED
                    other.waiting_reason = None
                    other.error = None if other.id == workflow else error
                    other.finished_at = now
            return
        if job.state is JobState.RUNNING:
            job.cancel_requested = True
        elif job.state is JobState.QUEUED:
            job.state = JobState.CANCELLED
            job.waiting_reason = None
            job.finished_at = now
            self._cascade(step, _error(STEP_CANCELLED, f"step {job.task!r} (job {job.id})"), now)

    def resume(self, job: JobRecord, now: float) -> None:
        """``Store.retry`` of a step: the whole workflow resumes from what failed."""
        for other in self.workflow(self._steps[job.id].link.workflow):
            if other.state not in (JobState.FAILED, JobState.CANCELLED):
                continue
            other.state = JobState.QUEUED
            other.attempt = 0
            other.run_at = now
            other.finished_at = None
            other.error = None
            other.cancel_requested = False
            if self._steps[other.id].waits == 0:
                other.waiting_reason = None
                self._index(other)
            else:
                other.waiting_reason = Waiting.INPUTS

    def workflow(self, workflow: str) -> list[JobRecord]:
        found = [
            self._jobs[job_id]
            for job_id, step in self._steps.items()
            if step.link.workflow == workflow and job_id in self._jobs
        ]
        return sorted(found, key=lambda job: job.id)

    def forget(self, job_id: str) -> None:
        self._steps.pop(job_id, None)


def _waiting(job: JobRecord) -> bool:
    return job.state is JobState.QUEUED and job.waiting_reason is Waiting.INPUTS


def _error(kind: str, step: str, why: str = "") -> JobError:
    verb = "failed" if kind == STEP_FAILED else "was cancelled"
    return JobError(kind, f"not run: {step} {verb}{why}")
