"""The process pool for ``cpu_bound`` tasks: one process per slot, each with its own pipe.

Not ``concurrent.futures.ProcessPoolExecutor``: when one of its processes dies, every job in
the pool fails with ``BrokenProcessPool``, and so does every later one; and it cannot stop
one job's process, so a job past its timeout keeps its slot until its body returns. Here a
process runs one job at a time and the pool knows which, so a death fails that job alone
(``ProcessDied``), and a job that times out or is cancelled has its process stopped and
replaced while the other jobs run on.

The processes come from multiprocessing's fork server where the platform has one, else are
spawned; never forked from the worker itself, whose store threads and locks a fork would copy
mid-flight. The fork server is a fresh single-threaded process that has imported offload
once, so a process to replace a dead or stopped one is ready in milliseconds rather than the
few hundred a fresh interpreter takes to import offload and pydantic. What runs inside the
processes is ``procchild.py``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import contextvars
import json
import logging
import multiprocessing
import signal
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from offload import correlation, procchild

__all__ = ["ProcessDied", "ProcessPool", "ProcessStartError"]

log = logging.getLogger("offload.worker")

# A stopped process (timed out, cancelled, shutdown) gets this long to exit on SIGTERM before
# SIGKILL: enough for the interpreter to exit, short enough that a task ignoring SIGTERM does
# not hold its memory for long.
STOP_GRACE = 1.0
# Requests above this size are written from a thread: a process still starting up does not
# read yet, and a write larger than the pipe's buffer would block the event loop until it does.
INLINE_SEND = 64 * 1024

Progress = Callable[[float, str], Awaitable[Any]]

# What the fork server imports once for all its children. Only offload's own module: a user's
# task module may do anything when imported, and an exception there would take the fork server,
# so every later start, down with it; each child imports the task modules it needs itself.
PRELOAD = ["offload.procchild"]


def _start_context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # The fork server is one per process: this takes effect if none is running yet.
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


class ProcessDied(Exception):
    """The process running a ``cpu_bound`` job ended before the job did."""

    def __init__(self, exitcode: int, starting: bool = False) -> None:
        self.exitcode = exitcode
        if exitcode < 0:
            try:
                how = f"signal {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"signal {-exitcode}"
        else:
            how = f"exit code {exitcode}"
        if starting:
            message = (
                f"the process for this job died while starting ({how}), before it could run "
                "the job; its stderr says why. A script that starts a worker must do so under "
                '`if __name__ == "__main__":`, since each pool process re-imports the script'
            )
        else:
            message = f"the process running this job died ({how})"
            if exitcode == -signal.SIGKILL:
                message += "; the kernel's out-of-memory killer sends SIGKILL (see `dmesg`)"
        super().__init__(message)


class ProcessStartError(Exception):
    """No process could be started for a ``cpu_bound`` job (out of memory or processes)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            "no process could be started to run this cpu_bound job "
            f"({type(cause).__name__}: {cause}); the machine may be out of memory or of "
            "processes"
        )


class _Child:
    """One pool process and the worker's end of its pipe."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self.loop = asyncio.get_running_loop()
        ours, self._theirs = context.Pipe()
        self.process: multiprocessing.process.BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=procchild.main, args=(self._theirs,), name="offload-cpu-bound"
        )
        self.conn = ours
        self.ready = False
        self.exitcode: int | None = None
        self.exited = asyncio.Event()
        # The running job's context: the child's log lines are written in it, so they carry
        # what the worker bound for the job (its ids, its secret arguments to redact).
        self.job_context: contextvars.Context | None = None
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._fd = ours.fileno()
        self._sentinel = -1

    def start(self) -> None:
        """Start the process; blocking (the first start also starts the fork server), so the
        pool calls it from a thread."""
        try:
            self.process.start()
        finally:
            self._theirs.close()  # so that the child's death reads as end of file here

    def watch(self) -> None:
        """Read the child's messages and learn of its exit, on the loop, from now on."""
        self._sentinel = self.process.sentinel
        self.loop.add_reader(self._fd, self._read)
        self.loop.add_reader(self._sentinel, self._on_exit)

    def _read(self) -> None:
        try:
            while self.conn.poll():
                self._dispatch(json.loads(self.conn.recv_bytes()))
        except (EOFError, OSError):
            # The child is gone; the sentinel reports how it ended.
            self._unwatch(self._fd)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "log":
            if self.job_context is not None:
                self.job_context.run(_emit, message)
            else:
                _emit(message)
        elif kind == "ready":
            self.ready = True
        else:
            self._inbox.append(message)
            self._wake.set()

    def _on_exit(self) -> None:
        self._unwatch(self._sentinel)
        if not self.conn.closed:
            self._read()  # what the child wrote before it ended
        self._unwatch(self._fd)
        self.process.join(STOP_GRACE)  # at once: the sentinel says it has exited
        self.exitcode = self.process.exitcode if self.process.exitcode is not None else -1
        self.conn.close()
        self.exited.set()
        self._wake.set()

    def _unwatch(self, fd: int) -> None:
        with contextlib.suppress(Exception):  # a closed loop has no readers left
            self.loop.remove_reader(fd)

    async def call(self, request: dict[str, Any], progress: Progress) -> dict[str, Any]:
        """Send one job and wait for how it ended, storing its progress meanwhile."""
        data = json.dumps(request).encode()
        self.job_context = contextvars.copy_context()
        try:
            if len(data) > INLINE_SEND:
                await asyncio.to_thread(self.conn.send_bytes, data)
            else:
                self.conn.send_bytes(data)
        except OSError:
            pass  # it died: the sentinel says how, below
        while True:
            if not self._inbox:
                if self.exitcode is not None:
                    raise ProcessDied(self.exitcode, starting=not self.ready)
                self._wake.clear()
                await self._wake.wait()
                continue
            message = self._inbox.popleft()
            if message["kind"] != "progress":
                self.job_context = None
                return message
            # Only the latest of several waiting reports is worth a store write.
            if self._inbox and self._inbox[0]["kind"] == "progress":
                continue
            try:
                await progress(float(message["fraction"]), str(message["message"]))
            except Exception as exc:
                log.warning(
                    "the progress of a cpu_bound job could not be stored",
                    extra={"action": "job.progress_error", "error": f"{type(exc).__name__}: {exc}"},
                )

    def stop(self) -> None:
        """Ask the process to end now (SIGTERM); ``kill`` follows if it does not."""
        self.job_context = None
        if self.exitcode is None:
            with contextlib.suppress(Exception):
                self.process.terminate()

    def close(self) -> None:
        """End of file for an idle child, which then exits by itself."""
        self._unwatch(self._fd)
        self._unwatch(self._sentinel)
        with contextlib.suppress(Exception):
            self.conn.close()


def _emit(message: dict[str, Any]) -> None:
    """Write a record the child logged through this process's logging."""
    logger = logging.getLogger(str(message["name"]))
    level = int(message["level"])
    if not logger.isEnabledFor(level):
        return
    fields = message.get("fields") or {}
    record = logging.makeLogRecord(
        {
            **fields,
            "name": logger.name,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": str(message["message"]),
            "created": float(message["created"]),
            "pathname": message.get("pathname") or "",
            "lineno": message.get("lineno") or 0,
            "funcName": message.get("func") or "",
        }
    )
    exception = message.get("exception")
    if exception:
        record.exc_text = exception.rstrip("\n")  # stdlib formatters append this
        record.exception = record.exc_text  # what the JSON renderer shows
    logger.handle(record)


class ProcessPool:
    """Up to ``size`` processes, started on demand and kept for later jobs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._context = _start_context()
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._reaping: set[asyncio.Task[None]] = set()
        _pools.add(self)

    async def run(
        self,
        module: str,
        task: str,
        args: str,
        kwargs: str,
        context: dict[str, Any],
        progress: Progress,
        function: str | None = None,
    ) -> dict[str, Any]:
        """Run one job in a free process; returns the child's reply (see ``procchild``).
        ``function`` names the task's function in ``module``, for a task not itself there.

        Raises ``ProcessDied`` when the process ends first. Cancelled (a timeout, a cancel
        request, a shutdown), it stops the job's process and frees the slot at once."""
        request = {
            "module": module,
            "task": task,
            "function": function,
            "args": args,
            "kwargs": kwargs,
            "context": context,
            "fields": dict(correlation.current()),
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        async with self._slots:
            child = self._idle_child() or await self._spawn()
            healthy = False
            try:
                reply = await child.call(request, progress)
                healthy = True
                return reply
            finally:
                if healthy and child.exitcode is None:
                    self._idle.append(child)
                else:
                    self._retire(child)

    def _idle_child(self) -> _Child | None:
        """A started process waiting for a job; one that died meanwhile (the OOM killer
        picks large idle processes too) is dropped, not handed a job it would fail."""
        while self._idle:
            child = self._idle.pop()
            if child.exitcode is None:
                return child
            self._children.discard(child)
            log.warning(
                "an idle cpu_bound pool process died; a new one takes its place",
                extra={"action": "worker.idle_process_died", "exitcode": child.exitcode},
            )
        return None

    async def _spawn(self) -> _Child:
        child = _Child(self._context)
        # Exit hooks run last registered first. multiprocessing's own one joins every child,
        # and ours wait for this process to close their pipes: so ours must run before that
        # one, which registers when first imported (by a start) and again when it logs.
        atexit.unregister(_stop_all)
        atexit.register(_stop_all)
        starting = asyncio.ensure_future(asyncio.to_thread(child.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Cancelled (a timeout, say) while the start goes on in its thread: stop the
            # process once it exists, so none is left behind unwatched.
            starting.add_done_callback(lambda done: self._started_late(child, done))
            raise
        except Exception as exc:
            raise ProcessStartError(exc) from exc
        self._children.add(child)
        child.watch()
        return child

    def _started_late(self, child: _Child, done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        self._children.add(child)
        child.watch()
        self._retire(child)

    def _retire(self, child: _Child) -> None:
        child.stop()
        reaper = asyncio.get_running_loop().create_task(self._reap(child))
        self._reaping.add(reaper)
        reaper.add_done_callback(self._reaping.discard)

    async def _reap(self, child: _Child) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.exited.wait(), STOP_GRACE)
            if not child.exited.is_set():
                with contextlib.suppress(Exception):
                    child.process.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.exited.wait(), STOP_GRACE)
        finally:
            self._children.discard(child)

    def shutdown(self, wait: bool = True) -> None:
        """Stop every process: idle ones by closing their pipes (and, unless ``wait``, busy
        ones by SIGTERM), then SIGKILL whatever is left after ``STOP_GRACE``.

        Blocking, but for at most twice ``STOP_GRACE``: the worker's drain has ended the jobs
        already, so only idle processes are usually left, and they exit at once."""
        _pools.discard(self)
        for reaper in self._reaping:
            reaper.cancel()
        children = list(self._children)
        idle = set(self._idle)
        self._idle.clear()
        self._children.clear()
        for child in children:
            child.close()
            if not wait or child not in idle:
                child.stop()
        for child in children:
            child.process.join(STOP_GRACE)
            if child.process.exitcode is None:
                child.process.terminate()
        for child in children:
            child.process.join(STOP_GRACE)
            if child.process.exitcode is None:
                child.process.kill()
                child.process.join(STOP_GRACE)


_pools: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def _stop_all() -> None:
    for pool in list(_pools):
        pool.shutdown(wait=False)
