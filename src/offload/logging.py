"""Log rendering for the command line and the service (DESIGN §9).

Library code only logs through stdlib ``logging`` with an ``action`` key and never configures
logging; this module is what a process's entry point calls to turn those records into one JSON
object per line, so that log shippers can index ``action``, ``job_id`` and ``request_id``
without parsing prose. Every line also carries the correlation fields bound where it was
written (see ``offload.correlation``) and goes through the redactor (``offload.redaction``).

Applications with their own logging set-up can add :class:`CorrelationFilter` and
:class:`RedactingFilter` to their handlers instead of calling :func:`configure_logging`.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from offload import correlation
from offload.redaction import (
    REDACTED,
    Redactor,
    current_scoped_secrets,
    default_redactor,
    scoped_secrets,
)

__all__ = [
    "CorrelationFilter",
    "RedactingFilter",
    "add_correlation",
    "configure_logging",
    "flush_logging",
    "redact_event",
]

# Rotation for file output: bounded disk use (60 MiB) with a few files of history, which is
# plenty for the hours between an incident and someone reading about it.
FILE_MAX_BYTES = 10 * 1024 * 1024
FILE_BACKUPS = 5
# Servers that install their own handlers; their records are re-routed through ours so the
# whole process speaks one format.
CAPTURED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Loggers of dependencies that repeat at WARNING what offload's own lines already say once:
# psycopg's pool writes a line for each failed reconnect and each broken connection it drops
# during a PostgreSQL outage, while the store logs the outage and its end.
QUIETED_LOGGERS = {"psycopg.pool": logging.ERROR}

EventDict = MutableMapping[str, Any]


def add_correlation(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """structlog processor: the fields bound in this context, where the event has none."""
    for key, value in correlation.current().items():
        event.setdefault(key, value)
    return event


def _redactor_processor(redactor: Redactor) -> structlog.typing.Processor:
    def redact(_logger: Any, _method: str, event: EventDict) -> EventDict:
        redactor.event(event)
        return event

    return redact


redact_event = _redactor_processor(default_redactor)
"""structlog processor: secret keys' values and secret strings hidden (run it last)."""


def _add_correlation_fields(record: logging.LogRecord) -> None:
    """The fields bound in this context onto ``record``, where its ``extra`` has none."""
    for key, value in correlation.current().items():
        if not hasattr(record, key):
            setattr(record, key, value)


class CorrelationFilter(logging.Filter):
    """For your own handlers: adds the bound correlation fields to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _add_correlation_fields(record)
        return True


class RedactingFilter(logging.Filter):
    """For your own handlers: hides secrets in a record's message, traceback and ``extra``
    fields."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def __init__(self, redactor: Redactor = default_redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self.redactor
        record.msg = redactor.message(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            # Rendered here, so the handler's formatter prints the redacted text it finds
            # in ``exc_text`` instead of formatting the exception itself.
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.message(record.exc_text)
        for key, value in list(vars(record).items()):
            if key in self._STANDARD:
                continue
            if redactor.is_secret_key(key):
                setattr(record, key, REDACTED)
            elif isinstance(value, str | dict | list | tuple):
                setattr(record, key, redactor.value(value))
        return True


_TRACEBACKS = logging.Formatter()


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(
            f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return numeric


# LogRecord attributes that are not ``extra=`` fields.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


_second: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    """ISO 8601 in UTC with microseconds; the date and time part is reused within a second,
    since a busy worker writes thousands of lines in each."""
    global _second
    whole = int(created)
    second, prefix = _second
    if whole != second:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, prefix)
    return f"{prefix}.{int((created - whole) * 1_000_000):06d}Z"


# One encoder for every line: json.dumps builds a new one per call when given ``default``.
# Anything JSON cannot hold is written as its repr, as structlog's renderer does.
_ENCODER = json.JSONEncoder(default=repr)


def _dumps(event: Any, **_: Any) -> str:
    return _ENCODER.encode(event)


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's ``ProcessorFormatter`` with a direct path for plain stdlib records.

    The generic path copies every record and walks the stack; for the records library code
    writes (a message and ``extra`` fields) building the event dict straight from the record
    renders the same line in about half the time, which matters for the per-request line.
    """

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._chain: list[structlog.typing.Processor] = [
            add_correlation,
            # Tracebacks become text before redaction, so a secret quoted in one is hidden.
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ]
        super().__init__(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *self._chain],
        )

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):  # from a structlog logger: the generic path
            return super().format(record)
        event: dict[str, Any] = {
            "timestamp": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = record.__dict__
        for key in sorted(fields.keys() - _RECORD_ATTRS):
            event[key] = fields[key]
        if record.exc_info:
            event["exc_info"] = record.exc_info
        method = record.levelname.lower()
        rendered: Any = event
        for processor in self._chain:
            rendered = processor(None, method, rendered)
        return str(rendered)


# Attribute carrying a record's scoped secrets to the writer thread (never rendered).
_SCOPED_ATTR = "_offload_scoped_secrets"


class _HandOff(logging.handlers.QueueHandler):
    """Puts records on the writer thread's queue, with what only this thread knows.

    Rendering and writing a JSON line costs several times what creating the record does; on
    the writer thread that cost stays off the request (or job) that logged. The correlation
    fields and the scoped secrets live in context variables, which the writer thread cannot
    see, so they are read here and travel on the record."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if not isinstance(record.msg, dict):  # structlog's own events stay dicts
            record.msg = record.getMessage()
            record.args = None
        _add_correlation_fields(record)
        scoped = current_scoped_secrets()
        if scoped:
            record.__dict__[_SCOPED_ATTR] = scoped
        return record


class _Writer(logging.handlers.QueueListener):
    def handle(self, record: logging.LogRecord) -> None:
        scoped = record.__dict__.pop(_SCOPED_ATTR, None)
        if scoped:
            with scoped_secrets(scoped):
                super().handle(record)
        else:
            super().handle(record)


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _start_writer(handlers: list[logging.Handler]) -> _HandOff:
    global _writer
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    writer = _Writer(records, *handlers, respect_handler_level=True)
    writer.start()
    with _writer_lock:
        _writer = writer
    return _HandOff(records)


def _stop_writer() -> None:
    """Write what is queued, then stop the thread (at exit, and before a new set-up)."""
    global _writer
    with _writer_lock:
        writer, _writer = _writer, None
    if writer is not None:
        writer.stop()


def _restart_writer_after_fork() -> None:
    # A forked child has the queue but not the thread: give it its own writer for the same
    # handlers, so a pre-forking server's workers keep logging.
    writer = _writer
    if writer is None:
        return
    root = logging.getLogger()
    for old in root.handlers[:]:
        if isinstance(old, _HandOff):
            root.removeHandler(old)
    hand_off = _start_writer(list(writer.handlers))
    hand_off._offload = True  # type: ignore[attr-defined]
    root.addHandler(hand_off)


atexit.register(_stop_writer)
os.register_at_fork(after_in_child=_restart_writer_after_fork)


def flush_logging(timeout: float = 5.0) -> None:
    """Wait until every record logged so far is written (with ``background=True``)."""
    writer = _writer
    if writer is None:
        return
    records = writer.queue
    if isinstance(records, queue.Queue):
        with records.all_tasks_done:
            records.all_tasks_done.wait_for(lambda: records.unfinished_tasks == 0, timeout)


def configure_logging(
    json: bool | None = True,
    level: str | int = "INFO",
    file: str | os.PathLike[str] | None = None,
    *,
    stream: TextIO | None = None,
    file_max_bytes: int = FILE_MAX_BYTES,
    file_backups: int = FILE_BACKUPS,
    background: bool = True,
) -> None:
    """Render every stdlib record (with its ``extra={...}`` fields) on stderr.

    ``json=True`` writes one JSON object per line; ``json=False`` renders for a person (in
    colour on a terminal); ``json=None`` picks JSON unless the stream is a terminal. ``file``
    adds a size-rotated JSON log file. Calling it again replaces the previous set-up.
    Raises ``ValueError`` for an unknown level name.

    With ``background=True`` lines are rendered and written on one writer thread, so a
    request or job pays only for creating the record; what is queued is written at exit
    (``flush_logging()`` waits for it at any time), but a process killed outright loses the
    last few milliseconds of lines.
    """
    numeric = _level(level)
    out = stream if stream is not None else sys.stderr
    is_tty = out.isatty()
    as_json = json if json is not None else not is_tty
    json_renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    renderer: structlog.typing.Processor = (
        json_renderer if as_json else structlog.dev.ConsoleRenderer(colors=is_tty)
    )
    handler: logging.Handler = logging.StreamHandler(out)
    handler.setFormatter(_Formatter(renderer))
    handlers = [handler]
    if file is not None:
        file_handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=file_max_bytes, backupCount=file_backups, encoding="utf-8"
        )
        file_handler.setFormatter(_Formatter(json_renderer))
        handlers.append(file_handler)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        if getattr(old, "_offload", False):  # only close what an earlier call opened
            old.close()
    previous = _writer
    _stop_writer()  # writes what it holds first
    for old in previous.handlers if previous is not None else ():
        old.close()
    if background:
        handlers = [_start_writer(handlers)]
    for new in handlers:
        new._offload = True  # type: ignore[attr-defined]
        root.addHandler(new)
    root.setLevel(numeric)
    for name in CAPTURED_LOGGERS:
        captured = logging.getLogger(name)
        captured.handlers.clear()
        captured.propagate = True
    for name, floor in QUIETED_LOGGERS.items():
        logging.getLogger(name).setLevel(max(numeric, floor))
    # Code that logs through structlog directly goes through the same formatter, so both
    # kinds of record come out in one format on one stream.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            add_correlation,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
