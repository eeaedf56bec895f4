"""Where a task's body runs: on the event loop (async), in a thread pool (sync), or in a
process pool (``cpu_bound``).

Only task names and JSON cross into the process pool: the child imports the task's own module
and looks the task up by name, so no function object or argument is ever pickled by offload
(the pool's own framing carries plain strings).
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import logging
import multiprocessing
import traceback
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from offload.errors import Cancel, Fail, Retry
from offload.jobs import JobContext
from offload.tasks import Task

log = logging.getLogger("offload.worker")


class RemoteTaskError(Exception):
    """An exception raised by a ``cpu_bound`` task in a pool process, carried back as text."""

    def __init__(self, type_name: str, message: str, tb: str) -> None:
        self.type_name = type_name
        self.remote_traceback = tb
        super().__init__(message)


def _find_task(module_name: str, task_name: str) -> Task[Any, Any]:
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, Task) and value.name == task_name:
            return value
    raise LookupError(f"task {task_name!r} is not defined at module level in {module_name}")


def run_in_child(
    module_name: str, task_name: str, args: str, kwargs: str, context: tuple[str, str, int]
) -> tuple[str, Any, Any, Any]:
    """Entry point inside a pool process; returns a tagged tuple of plain values."""
    try:
        task = _find_task(module_name, task_name)
        call_args, call_kwargs = task.codec.decode_args(args, kwargs)
        if task.codec.context_param is not None:
            job_id, queue, attempt = context
            ctx = JobContext(job_id=job_id, task=task_name, queue=queue, attempt=attempt)
            task.codec.add_context(call_args, call_kwargs, ctx)
        value = task.fn(*call_args, **call_kwargs)
        return ("ok", task.codec.encode_result(value), None, None)
    except Retry as exc:
        return ("retry", exc.after, exc.reason, None)
    except Fail as exc:
        return ("fail", exc.reason, None, None)
    except Cancel as exc:
        return ("cancel", str(exc), None, None)
    except BaseException as exc:
        return ("error", type(exc).__name__, str(exc), traceback.format_exc())


class Executors:
    """The pools a worker uses; created lazily so an async-only app starts no threads."""

    def __init__(self, threads: int, processes: int | None = None) -> None:
        self._thread_count = threads
        self._process_count = processes
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None
        self._in_threads: set[Future[Any]] = set()

    @property
    def threads(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max_workers=self._thread_count, thread_name_prefix="offload-sync"
            )
        return self._threads

    @property
    def processes(self) -> ProcessPoolExecutor:
        if self._processes is None:
            # spawn: a forked child would inherit the store's threads and locks mid-flight.
            self._processes = ProcessPoolExecutor(
                max_workers=self._process_count, mp_context=multiprocessing.get_context("spawn")
            )
        return self._processes

    async def run_sync(self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        future = self.threads.submit(ctx.run, task.fn, *args, **kwargs)
        # Tracked here because a timed-out call keeps its thread after the job has ended.
        self._in_threads.add(future)
        future.add_done_callback(self._in_threads.discard)
        return await asyncio.wrap_future(future, loop=loop)

    @property
    def busy(self) -> bool:
        """Whether a sync task (say one abandoned after its timeout) still holds a thread."""
        return any(not f.done() for f in self._in_threads)

    async def run_process(
        self,
        task: Task[Any, Any],
        args: str,
        kwargs: str,
        context: tuple[str, str, int],
    ) -> str:
        loop = asyncio.get_running_loop()
        pool: Executor = self.processes
        tag, a, b, c = await loop.run_in_executor(
            pool, run_in_child, task.fn.__module__, task.name, args, kwargs, context
        )
        if tag == "ok":
            return str(a)
        if tag == "retry":
            raise Retry(after=a, reason=b or "")
        if tag == "fail":
            raise Fail(a)
        if tag == "cancel":
            raise Cancel(a)
        raise RemoteTaskError(a, b, c)

    def shutdown(self, wait: bool) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=wait, cancel_futures=True)
            self._threads = None
        if self._processes is not None:
            self._processes.shutdown(wait=wait, cancel_futures=True)
            self._processes = None
