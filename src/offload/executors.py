"""Where a task's body runs: on the event loop (async), in a thread pool (sync), or in a
process pool (``cpu_bound``, see ``procpool.py``).

Only task names and JSON cross into the process pool: the child imports the task's own module
and looks the task up by name, so no function object or argument is ever pickled by offload
(multiprocessing pickles only what starts the child: offload's entry point and its pipe).
"""

from __future__ import annotations

import asyncio
import contextvars
import multiprocessing
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from offload.errors import Cancel, Fail, Retry
from offload.jobs import JobRecord
from offload.procpool import ProcessDied, ProcessPool, Progress
from offload.serialization import PayloadError
from offload.tasks import Task

__all__ = [
    "Executors",
    "ProcessDied",
    "RemoteTaskError",
    "UnencodableResult",
    "context_fields",
    "importable_module",
    "unimportable",
]


class RemoteTaskError(Exception):
    """An exception raised by a ``cpu_bound`` task in a pool process, carried back as text."""

    def __init__(self, type_name: str, message: str, tb: str) -> None:
        self.type_name = type_name
        self.remote_traceback = tb
        super().__init__(message)


class UnencodableResult(Exception):
    """A ``cpu_bound`` task returned what cannot be stored as JSON: failed at once, as the
    same result of a task run in the worker is, since no retry would change it."""


def context_fields(record: JobRecord) -> dict[str, Any]:
    """What a task's ``JobContext`` is made of, but for its progress function: the same for
    every executor, and plain JSON so that it can reach a pool process."""
    return {
        "job_id": record.id,
        "task": record.task,
        "queue": record.queue,
        "attempt": record.attempt,
        "meta": record.meta,
    }


def importable_module(task: Task[Any, Any]) -> str | None:
    """The module a pool process imports to find ``task``; ``None`` if there is none.

    A task defined in the script being run has ``__main__`` for its module, and a pool
    process's ``__main__`` is not that script: it re-imports it under another name, so the
    task's name differs there. Run as ``python -m package.module``, the module is importable
    by that name."""
    module = task.fn.__module__
    if module != "__main__":
        return module
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    return None


def unimportable(task: Task[Any, Any]) -> str | None:
    """Why a ``cpu_bound`` task cannot run in the process pool, or ``None`` when it can."""
    if not task.config.cpu_bound or importable_module(task) is not None:
        return None
    return (
        f"cpu_bound task {task.name!r} is defined in the script being run (`__main__`), which "
        "the pool's processes cannot import: move the task into a module of its own (say "
        f"tasks.py, then `from tasks import {task.fn.__qualname__}` in the script), or run "
        "the script as a module (`python -m`)"
    )


def _not_in_bootstrap() -> None:
    # A spawned process re-imports the main script before it runs anything; a script that
    # starts a worker without a `__main__` guard would start one in every pool process too.
    # multiprocessing marks that phase with this (private) flag; refuse it with the fix.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "a worker is being started while a cpu_bound pool process imports the main "
            'script; start the worker under `if __name__ == "__main__":` in that script'
        )


class Executors:
    """The pools a worker uses; created lazily so an async-only app starts no threads."""

    def __init__(self, threads: int, processes: int | None = None) -> None:
        _not_in_bootstrap()
        if processes is not None and processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self._thread_count = threads
        self._process_count = processes
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPool | None = None
        self._in_threads: set[Future[Any]] = set()

    @property
    def threads(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max_workers=self._thread_count, thread_name_prefix="offload-sync"
            )
        return self._threads

    @property
    def processes(self) -> ProcessPool:
        if self._processes is None:
            self._processes = ProcessPool(self._process_count or os.cpu_count() or 1)
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
        context: dict[str, Any],
        progress: Progress,
    ) -> str:
        """Run a ``cpu_bound`` task in a pool process; returns its encoded result.

        Raises what the task raised (``RemoteTaskError`` for an exception that is not one of
        offload's commands), ``PayloadError`` when the stored arguments do not fit the task,
        ``UnencodableResult``, ``ProcessDied`` or ``ProcessStartError``."""
        module = importable_module(task)
        if module is None:  # the runner fails such a job before it gets here
            raise Fail(unimportable(task) or "")
        reply = await self.processes.run(
            module, task.name, args, kwargs, context, progress, function=task.fn.__qualname__
        )
        kind = reply["kind"]
        if kind == "ok":
            return str(reply["result"])
        if kind == "retry":
            raise Retry(after=reply["after"], reason=reply["reason"] or "")
        if kind == "fail":
            raise Fail(reply["reason"])
        if kind == "cancel":
            raise Cancel(reply["message"])
        if kind == "payload":
            raise PayloadError(reply["message"])
        if kind == "unencodable":
            raise UnencodableResult(reply["message"])
        raise RemoteTaskError(reply["type"], reply["message"], reply["traceback"])

    def shutdown(self, wait: bool) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=wait, cancel_futures=True)
            self._threads = None
        if self._processes is not None:
            self._processes.shutdown(wait=wait)
            self._processes = None
