"""What runs inside a process of the ``cpu_bound`` pool (see ``procpool.py`` for the other end).

The child reads one job at a time from its pipe, runs it, and writes back how it ended. Every
message either way is one UTF-8 JSON object in the pipe's length-prefixed frame: the job's
task name and its arguments as stored, never a pickled function or value. Meanwhile the child
sends the task's progress reports and log records over the same pipe, so that the worker
stores the progress and writes the lines through its own logging, with the job's fields.

Replies the child sends (``kind``): ``ready`` once at start, then per job any number of
``progress`` and ``log``, and one of ``ok``, ``retry``, ``fail``, ``cancel``, ``payload`` (the
stored arguments do not fit the task), ``unencodable`` (the result is not JSON) or ``error``.
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from offload import correlation
from offload.errors import Cancel, Fail, Retry
from offload.jobs import JobContext
from offload.serialization import Codec, PayloadError
from offload.tasks import Task

# LogRecord attributes that are not a record's ``extra=`` fields.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class _Pipe:
    """The child's end of the pipe; a lock keeps frames whole when task threads log."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        # repr for what JSON cannot hold: only log fields can be such values.
        data = json.dumps(message, default=repr).encode()
        with self._lock:
            self.conn.send_bytes(data)


class _ForwardHandler(logging.Handler):
    """Sends each record to the worker, which writes it through its own handlers.

    The correlation fields bound in this process travel on the record, so a line the task
    writes shows its job's id and request id like the worker's own lines."""

    def __init__(self, pipe: _Pipe) -> None:
        super().__init__()
        self.pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
            for key, value in correlation.current().items():
                fields.setdefault(key, value)
            exception = None
            if record.exc_info:
                exception = "".join(traceback.format_exception(*record.exc_info))
            self.pipe.send(
                {
                    "kind": "log",
                    "name": record.name,
                    "level": record.levelno,
                    "message": record.getMessage(),
                    "created": record.created,
                    "pathname": record.pathname,
                    "lineno": record.lineno,
                    "func": record.funcName,
                    "exception": exception,
                    "fields": fields,
                }
            )
        except Exception:
            self.handleError(record)


def _watch_parent() -> None:
    """End this process when the worker that started it ends.

    A worker killed outright (SIGKILL, the OOM killer) cannot stop its children, and a child
    busy with a long job would not notice its closed pipe until the job ended. The parent's
    sentinel (a pipe multiprocessing keeps open in the worker, whether the process was spawned
    or came from the fork server) becomes readable the moment the worker is gone."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="offload-parent-watch", daemon=True).start()


@dataclass(frozen=True, slots=True)
class Runnable:
    """What the child needs of a task: its function and the codec of its arguments."""

    fn: Any
    codec: Codec


def find_task(module_name: str, task_name: str, function: str | None = None) -> Runnable:
    """The task in the module the worker named. A ``Task`` at module level, or else the
    module-level function the task wraps (``function``, its name there): an application that
    registers its tasks in a factory keeps the functions at module level but not the tasks.
    Only names the worker sent are looked up, never one taken from a job's payload."""
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, Task) and value.name == task_name:
            return Runnable(value.fn, value.codec)
    fn = getattr(module, function, None) if function and function.isidentifier() else None
    if callable(fn) and not isinstance(fn, Task):
        return Runnable(fn, Codec(fn, task_name))
    raise LookupError(
        f"task {task_name!r} is not defined at module level in {module_name} as the process "
        "pool imports it; a cpu_bound task must be a module-level name of an importable module"
    )


def _run(request: dict[str, Any], pipe: _Pipe, tasks: dict[str, Runnable]) -> dict[str, Any]:
    def progress(fraction: float, message: str) -> None:
        pipe.send({"kind": "progress", "fraction": fraction, "message": message})

    name = request["task"]
    try:
        task = tasks.get(name)
        if task is None:
            task = tasks[name] = find_task(request["module"], name, request.get("function"))
        args, kwargs = task.codec.decode_args(request["args"], request["kwargs"])
        if task.codec.context_param is not None:
            ctx = JobContext(**request["context"], progress=progress)
            task.codec.add_context(args, kwargs, ctx)
        value = task.fn(*args, **kwargs)
        try:
            return {"kind": "ok", "result": task.codec.encode_result(value)}
        except TypeError as exc:  # failed at once, as in the worker: no retry makes it JSON
            return {"kind": "unencodable", "message": str(exc)}
    except Retry as exc:
        return {"kind": "retry", "after": exc.after, "reason": exc.reason}
    except Fail as exc:
        return {"kind": "fail", "reason": exc.reason}
    except Cancel as exc:
        return {"kind": "cancel", "message": str(exc)}
    except PayloadError as exc:
        return {"kind": "payload", "message": str(exc)}
    except BaseException as exc:  # SystemExit too: the job failed, the process lives on
        return {
            "kind": "error",
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }


def main(conn: Connection) -> None:
    """The child's whole life: serve jobs until the worker closes the pipe."""
    # Ctrl-C in a terminal reaches the whole process group; the worker drains on it, so its
    # children must finish their jobs rather than fail them with KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent()
    pipe = _Pipe(conn)
    root = logging.getLogger()
    root.addHandler(_ForwardHandler(pipe))
    tasks: dict[str, Runnable] = {}
    pipe.send({"kind": "ready"})
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        # The worker's level, so that the records it would drop are not sent at all.
        root.setLevel(request["log_level"])
        token = correlation.bind(request["fields"])
        try:
            reply = _run(request, pipe, tasks)
        finally:
            correlation.reset(token)
        pipe.send(reply)
