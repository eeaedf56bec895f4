"""The typed handle users hold on a stored job, and the context a running job gets.

The records themselves (``JobRecord``, ``JobState``, ``JobError``, ``Progress``) live in
``offload.records``, below the stores, and are re-exported here. Times are float seconds
since the epoch inside offload; the handle exposes them as aware ``datetime`` objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from offload.errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from offload.records import STEP_FAILED, JobError, JobRecord, JobState, Progress
from offload.stores.base import Workflows

__all__ = ["Job", "JobContext", "JobError", "JobRecord", "JobState", "Progress"]

if TYPE_CHECKING:
    from offload.stores.base import Store

R = TypeVar("R")


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class Job(Generic[R]):
    """A handle on a stored job; ``R`` is the task's result type.

    The handle caches the row it last saw: ``state`` and friends are as of the last
    ``refresh()``, which keeps attribute access free of I/O.
    """

    __slots__ = ("_decode", "_record", "_run_sync", "_store")

    def __init__(
        self,
        record: JobRecord,
        store: Store,
        decode: Callable[[str], R] | None = None,
        run_sync: Callable[[Coroutine[Any, Any, Any]], Any] | None = None,
    ) -> None:
        self._record = record
        self._store = store
        self._decode = decode
        # How the *_sync reads reach the store from a thread with no loop: the app's own.
        self._run_sync = run_sync

    def __repr__(self) -> str:
        return f"<Job {self.id} {self._record.task} {self.state.value}>"

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def record(self) -> JobRecord:
        return self._record

    @property
    def task(self) -> str:
        return self._record.task

    @property
    def queue(self) -> str:
        return self._record.queue

    @property
    def state(self) -> JobState:
        return self._record.state

    @property
    def attempt(self) -> int:
        return self._record.attempt

    @property
    def error(self) -> JobError | None:
        return self._record.error

    @property
    def progress(self) -> Progress | None:
        return self._record.progress

    @property
    def meta(self) -> dict[str, Any]:
        return self._record.meta

    @property
    def enqueued_at(self) -> datetime:
        ts = _dt(self._record.enqueued_at)
        assert ts is not None
        return ts

    @property
    def run_at(self) -> datetime:
        ts = _dt(self._record.run_at)
        assert ts is not None
        return ts

    @property
    def started_at(self) -> datetime | None:
        return _dt(self._record.started_at)

    @property
    def finished_at(self) -> datetime | None:
        return _dt(self._record.finished_at)

    async def refresh(self) -> Job[R]:
        """Reload the row from the store; raises ``JobNotFound`` if it was purged."""
        record = await self._store.get(self.id)
        if record is None:
            raise JobNotFound(f"job {self.id} no longer exists (purged?)")
        self._record = record
        return self

    async def cancel(self) -> bool:
        """Cancel a queued job now, or ask its worker to stop a running one.

        Returns False when the job had already succeeded or failed; True for one cancelled
        before, which is what was asked. The rule is ``offload.admin.cancel_job``'s, the one
        the jobs API and the CLI follow.
        """
        # Imported here, not at the top: the operator layer sits above the handle (DESIGN §2),
        # so loading ``offload.jobs`` never loads it.
        from offload import admin

        try:
            self._record = await admin.cancel_job(self._store, self.id)
        except JobNotFound:
            raise JobNotFound(f"job {self.id} no longer exists (purged?)") from None
        except admin.NotCancellable as exc:
            self._record = exc.record
            return exc.record.state is JobState.CANCELLED
        return True

    async def steps(self) -> list[JobRecord]:
        """Every step of the workflow this job ends (``offload.chain``, ``group``,
        ``chord``), in the order they were stored, with their states; empty for a job of
        no workflow."""
        store = self._store
        workflow = self._record.meta.get("workflow")
        if workflow is None or not isinstance(store, Workflows):
            return []
        return await store.steps(workflow)

    async def result(self, timeout: float | None = None, poll: float = 0.01) -> R:
        """Wait for the job to finish and return its decoded result.

        Polls with a growing interval (up to 0.5 s): results are rare reads compared with the
        claim path, so a wake-up channel per waiting caller is not worth its cost.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        interval = poll
        while True:
            await self.refresh()
            record = self._record
            if record.state is JobState.SUCCEEDED:
                raw = record.result
                if self._decode is None or raw is None:
                    return _load_json(raw)  # type: ignore[no-any-return]
                return self._decode(raw)
            if record.state is JobState.FAILED:
                err = record.error or JobError("UnknownError", "no error was recorded")
                raise JobFailed(self.id, err.type, err.message, err.traceback)
            if record.state is JobState.CANCELLED:
                why = record.error
                if why is not None and why.type == STEP_FAILED:
                    # A workflow's last step, cancelled because a step before it failed:
                    # the workflow failed, and the error names that step.
                    raise JobFailed(self.id, why.type, why.message, why.traceback)
                raise JobCancelled(f"job {self.id} was cancelled")
            if deadline is not None and loop.time() >= deadline:
                raise ResultTimeout(
                    f"job {self.id} is still {record.state.value} after {timeout} s"
                )
            sleep = interval if deadline is None else min(interval, deadline - loop.time())
            await asyncio.sleep(max(sleep, 0))
            interval = min(interval * 1.5, 0.5)

    # --- for code that is not async --------------------------------------------------------

    def refresh_sync(self) -> Job[R]:
        """``refresh`` from a ``def`` endpoint, a sync task or a script."""
        self._blocking(self.refresh())
        return self

    def status_sync(self) -> JobState:
        """The job's state as the store holds it now (a fresh read, unlike ``state``)."""
        return self.refresh_sync().state

    def result_sync(self, timeout: float | None = None, poll: float = 0.01) -> R:
        """``result`` without an event loop of the caller's: the same wait and errors
        (``JobFailed``, ``JobCancelled``, ``ResultTimeout``, ``JobNotFound``)."""
        result: R = self._blocking(self.result(timeout, poll))
        return result

    def cancel_sync(self) -> bool:
        """``cancel`` from code that is not async."""
        cancelled: bool = self._blocking(self.cancel())
        return cancelled

    def _blocking(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self._run_sync is None:
            coro.close()
            raise RuntimeError(
                "this Job was not made by an app (Offload), so it has no way to reach the "
                "store from sync code; await the async form"
            )
        return self._run_sync(coro)


def _load_json(raw: str | None) -> Any:
    import json

    return None if raw is None else json.loads(raw)


class JobContext:
    """Given to a task that declares a parameter annotated ``JobContext``.

    ``attempt`` doubles as a fencing token for effectively-once side effects: a value above 1
    means an earlier attempt may have run part of the task.
    """

    __slots__ = ("_progress", "attempt", "job_id", "logger", "meta", "queue", "task")

    def __init__(
        self,
        *,
        job_id: str,
        task: str,
        queue: str,
        attempt: int,
        meta: dict[str, Any] | None = None,
        progress: Callable[[float, str], Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.task = task
        self.queue = queue
        self.attempt = attempt
        self.meta = meta or {}
        self._progress = progress
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"offload.task.{task}"),
            {"job_id": job_id, "task": task, "attempt": attempt, "queue": queue},
        )

    async def progress(self, fraction: float, message: str = "") -> None:
        """Record how far the task has got; visible through ``Job.progress`` and the API."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within [0, 1], got {fraction}")
        if self._progress is not None:
            result = self._progress(fraction, message)
            if asyncio.iscoroutine(result):
                await result
