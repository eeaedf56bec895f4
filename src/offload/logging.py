"""Log rendering for the command line and the service (DESIGN §9).

Library code only logs through stdlib ``logging`` with an ``action`` key; this module is what
a process's entry point calls to turn those records into one JSON object per line, so that
log shippers can index ``action``, ``job_id`` and friends without parsing prose.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(json: bool = True, level: str = "INFO") -> None:
    """Render every stdlib record (with its ``extra={...}`` fields) on stderr.

    ``json=False`` renders for a person instead, in colour when stderr is a terminal.
    Raises ``ValueError`` for an unknown level name.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(
            f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    shared: list[structlog.typing.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
        tail: list[structlog.typing.Processor] = [
            structlog.processors.format_exc_info,
            structlog.processors.UnicodeDecoder(),
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        tail = []
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Code that logs through structlog directly goes through the same formatter, so both
    # kinds of record come out in one format on one stream.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared[:2],
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
