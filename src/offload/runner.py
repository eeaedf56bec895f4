"""One attempt of one job: run the task, and turn how it ended into an ``Outcome``.

The worker (``worker.py``) decides what runs when, counts the outcomes and reports them in
batches; this module decides what an attempt's result or exception means: success, a retry
with backoff, a failure with its reason, a cancellation, or a requeue on shutdown (DESIGN §3).
The runner keeps no state of the worker's: it returns each attempt's ``Outcome``, the value
the store takes, and reads only why the worker cancelled a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Container
from typing import Any

from offload import correlation
from offload.app import Offload
from offload.depends import DependencyFailed
from offload.errors import Cancel, Fail, Retry
from offload.executors import (
    Executors,
    ProcessDied,
    RemoteTaskError,
    UnencodableResult,
    context_fields,
    unimportable,
)
from offload.jobs import JobContext, JobError, JobRecord
from offload.redaction import SECRET_ARGS_META, redact_text, scoped_secrets, secret_values
from offload.serialization import PayloadError
from offload.stores.base import Outcome, OutcomeKind
from offload.tasks import Task

log = logging.getLogger("offload.worker")

# Keep stored tracebacks readable and rows small.
MAX_TRACEBACK = 16_000


def _error_of(exc: BaseException, tb: bool = True) -> JobError:
    if isinstance(exc, RemoteTaskError):
        return JobError(exc.type_name, str(exc), exc.remote_traceback[-MAX_TRACEBACK:])
    if isinstance(exc, ProcessDied):  # the worker's own stack says nothing about the job
        return JobError(type(exc).__name__, str(exc))
    text = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:] if tb else None
    return JobError(type(exc).__name__, str(exc), text)


def _secret_args(record: JobRecord) -> list[str]:
    """The values of the job's ``Secret`` parameters, read from its stored arguments."""
    marked = record.meta.get(SECRET_ARGS_META) or ()
    try:
        args, kwargs = json.loads(record.args), json.loads(record.kwargs)
    except ValueError:
        return []
    values: list[str] = []
    for mark in marked:
        if isinstance(mark, int) and isinstance(args, list) and 0 <= mark < len(args):
            values.extend(secret_values(args[mark]))
        elif isinstance(mark, str) and isinstance(kwargs, dict) and mark in kwargs:
            values.extend(secret_values(kwargs[mark]))
    return values


class JobRunner:
    """Runs attempts for one worker and says how each ended.

    A job cancelled from outside (``CancelledError``) ends by why the worker cancelled it:
    ``cancelling`` holds the ids of the jobs whose cancellation was requested (they end
    ``cancelled``), ``stopping`` is set once the worker drains (the others are requeued).
    Both belong to the worker, which alone changes them.
    """

    def __init__(
        self,
        app: Offload,
        worker_id: str,
        executors: Executors,
        cancelling: Container[str],
        stopping: asyncio.Event,
    ) -> None:
        self.app = app
        self.store = app.store
        self.id = worker_id
        self.executors = executors
        self._cancelling = cancelling
        self._stopping = stopping
        for task in app.tasks.values():
            problem = unimportable(task)
            if problem is not None:  # said at start, not first at the job's failure
                log.warning(problem, extra={"action": "worker.task_unimportable"})

    async def run(self, record: JobRecord) -> Outcome:
        """Run one attempt with the job's ids bound for every log line written meanwhile,
        including the task's own, and its secret arguments hidden in them (DESIGN §9)."""
        token = correlation.bind(correlation.job_fields(record))
        observers = self.app.observers
        secrets_ = _secret_args(record) if SECRET_ARGS_META in record.meta else ()
        kind = "interrupted"
        started = time.perf_counter()
        try:
            with scoped_secrets(secrets_):
                # DEBUG: at INFO each attempt gets one line, when it ends.
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("job started", extra={"action": "job.started"})
                if observers:
                    observers.started(record)
                outcome = await self._outcome(record)
                kind = outcome.kind.value
        finally:
            if observers:
                observers.finished(record, kind, time.perf_counter() - started)
            correlation.reset(token)
        error = outcome.error
        if error is not None:
            # The stored error is shown by the API and the CLI: hide secret argument values a
            # message or traceback may quote, and registered secrets.
            outcome.error = JobError(
                error.type,
                redact_text(error.message, secrets_),
                None if error.traceback is None else redact_text(error.traceback, secrets_),
            )
        return outcome

    async def _outcome(self, record: JobRecord) -> Outcome:
        task = self.app.tasks.get(record.task)
        if task is None:
            return self._failed(
                record,
                JobError(
                    "UnknownTask",
                    f"task {record.task!r} is not registered in this worker; register it "
                    "(or deploy the code that does) and retry the job",
                ),
            )
        problem = unimportable(task)
        if problem is not None:
            return self._failed(record, JobError("TaskNotImportable", problem))
        try:
            result = await self._invoke(task, record)
        except asyncio.CancelledError:
            if record.id in self._cancelling:
                return Outcome(
                    record.id,
                    self.id,
                    record.attempt,
                    OutcomeKind.CANCELLED,
                    error=JobError("Cancelled", "cancelled while running"),
                )
            if self._stopping.is_set():
                log.warning(
                    "job interrupted by shutdown; requeued",
                    extra={"action": "job.requeued", **self._job_extra(record)},
                )
                return Outcome(record.id, self.id, record.attempt, OutcomeKind.REQUEUE)
            raise
        except PayloadError as exc:
            return self._failed(record, JobError("PayloadError", str(exc)))
        except UnencodableResult as exc:
            return self._failed(record, JobError("TypeError", str(exc)))
        except Retry as exc:
            return self._retry_or_fail(record, exc, task, explicit=exc.after)
        except Fail as exc:
            return self._failed(record, JobError("Fail", exc.reason))
        except Cancel as exc:
            return Outcome(
                record.id,
                self.id,
                record.attempt,
                OutcomeKind.CANCELLED,
                error=JobError("Cancel", str(exc) or "cancelled by the task"),
            )
        except Exception as exc:
            return self._retry_or_fail(record, exc, task)
        if task.config.cpu_bound:
            # Encoded in the pool process (procchild.py), which failed a result that is not
            # JSON: stored as it came, not decoded and encoded again here.
            encoded: str = result
        else:
            try:
                encoded = task.codec.encode_result(result)
            except TypeError as exc:
                return self._failed(record, _error_of(exc))
        # DEBUG: at INFO this line cost more CPU than a short job's own run (about 45 µs
        # rendered in line, 70 µs on the writer thread, against 75 µs for the rest of the
        # job), halving a worker's throughput. Failures and retries stay at ERROR and INFO;
        # counts of successes are in the metrics.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job succeeded", extra={"action": "job.succeeded", **self._job_extra(record)})
        return Outcome(record.id, self.id, record.attempt, OutcomeKind.SUCCEEDED, result=encoded)

    async def _invoke(self, task: Task[Any, Any], record: JobRecord) -> Any:
        """The task's return value; for a ``cpu_bound`` task, the result as its process
        encoded it."""
        timeout = record.timeout
        if task.config.cpu_bound:
            call = self.executors.run_process(
                task, record.args, record.kwargs, context_fields(record), self._progress(record)
            )
            try:
                raw = await self._with_timeout(call, timeout, record, thread=False)
            except ProcessDied as exc:
                log.error(
                    "the process running a job died; a new one takes its place",
                    extra={
                        "action": "worker.process_died",
                        "exitcode": exc.exitcode,
                        **self._job_extra(record),
                    },
                )
                observers = self.app.observers
                if observers:
                    observers.process_died(record, exc.exitcode)
                raise
            except TimeoutError:
                log.warning(
                    "cpu_bound task timed out; its process was stopped and will be replaced",
                    extra={"action": "job.process_stopped", **self._job_extra(record)},
                )
                raise
            return raw
        args, kwargs = task.codec.decode_args(record.args, record.kwargs)
        if task.dependencies:
            call = self._with_dependencies(task, record, args, kwargs)
            return await self._with_timeout(call, timeout, record, thread=not task.is_async)
        if task.codec.context_param is not None:
            task.codec.add_context(args, kwargs, self._context(record))
        if task.is_async:
            return await self._with_timeout(task.fn(*args, **kwargs), timeout, record, False)
        return await self._with_timeout(
            self.executors.run_sync(task, args, kwargs), timeout, record, thread=True
        )

    async def _with_dependencies(
        self, task: Task[Any, Any], record: JobRecord, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Run the task with its dependencies resolved (on the loop, sync ones in the task
        threads) and closed when it ends: the timeout and a cancellation reach them too, so a
        ``yield`` dependency is closed, with the job's exception, however the job ends."""
        codec = task.codec
        wanted = codec.context_param is not None or task.dependencies.wants_context
        ctx = self._context(record) if wanted else None
        async with contextlib.AsyncExitStack() as stack:
            kwargs.update(await task.dependencies.resolve(stack, ctx, self._in_thread))
            if ctx is not None and codec.context_param is not None:
                codec.add_context(args, kwargs, ctx)
            if task.is_async:
                return await task.fn(*args, **kwargs)
            return await self.executors.run_sync(task, args, kwargs)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A sync dependency's call, in the pool sync tasks run in, with the job's log
        fields (context variables) as the task itself gets them."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executors.threads, call)

    async def _with_timeout(
        self, call: Any, timeout: float | None, record: JobRecord, thread: bool
    ) -> Any:
        if timeout is None:
            return await call
        try:
            async with asyncio.timeout(timeout):
                return await call
        except TimeoutError:
            if thread:
                log.warning(
                    "sync task timed out; its thread is abandoned and may still be running",
                    extra={"action": "job.thread_abandoned", **self._job_extra(record)},
                )
            raise TimeoutError(f"task exceeded its timeout of {timeout:g} s") from None

    def _context(self, record: JobRecord) -> JobContext:
        # A pool process builds its context from the same fields and sends its progress
        # back to the same function (executors.py), so no executor gets a lesser one.
        return JobContext(**context_fields(record), progress=self._progress(record))

    def _progress(self, record: JobRecord) -> Callable[[float, str], Awaitable[None]]:
        store = self.store
        worker_id = self.id
        loop = asyncio.get_running_loop()

        async def progress(fraction: float, message: str) -> None:
            write = store.set_progress(record.id, worker_id, record.attempt, fraction, message)
            if asyncio.get_running_loop() is loop:
                await write
            else:
                # A sync task reporting from its thread (``asyncio.run(ctx.progress(...))``):
                # the store's connections belong to the worker's loop, so the write runs there.
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(write, loop))

        return progress

    def _retry_or_fail(
        self,
        record: JobRecord,
        exc: BaseException,
        task: Task[Any, Any],
        explicit: float | None = None,
    ) -> Outcome:
        policy = task.config.policy
        error = _error_of(exc)
        if isinstance(exc, DependencyFailed):  # retry_on= and give_up_on= mean its error
            exc = exc.error
        if isinstance(exc, Retry):
            if record.attempt >= record.max_attempts:
                return self._failed(
                    record,
                    JobError(
                        "Retry",
                        f"the task asked to retry but all {record.max_attempts} attempts are used"
                        + (f": {exc.reason}" if exc.reason else ""),
                    ),
                )
            delay = explicit if explicit is not None else policy.delay(record.attempt)
        else:
            decision = policy.decide(record.attempt, exc, record.max_attempts)
            if decision is None:
                return self._failed(record, error)
            delay = decision.delay
        log.info(
            "job will be retried",
            extra={
                "action": "job.retry",
                "delay": delay,
                "error": f"{error.type}: {error.message}",
                **self._job_extra(record),
            },
        )
        return Outcome(
            record.id, self.id, record.attempt, OutcomeKind.RETRY, error=error, delay=delay
        )

    def _failed(self, record: JobRecord, error: JobError) -> Outcome:
        log.error(
            "job failed",
            extra={
                "action": "job.failed",
                "error": f"{error.type}: {error.message}",
                **self._job_extra(record),
            },
        )
        return Outcome(record.id, self.id, record.attempt, OutcomeKind.FAILED, error=error)

    @staticmethod
    def _job_extra(record: JobRecord) -> dict[str, Any]:
        return {
            "job_id": record.id,
            "task": record.task,
            "attempt": record.attempt,
            "queue": record.queue,
        }
