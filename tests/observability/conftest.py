"""Fixtures for the observability tests: JSON logs captured in memory, a fresh redactor."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from offload import redaction
from offload.logging import configure_logging, flush_logging

LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_logs() -> Iterator[LogLines]:
    """``configure_logging(json=True)`` into a buffer; returns a reader of its parsed lines.

    The root logger and structlog are restored afterwards, so no other test sees the set-up.
    """
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=buffer)

    def lines() -> list[dict[str, Any]]:
        flush_logging()  # lines are written on the writer thread
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        structlog.reset_defaults()


@pytest.fixture
def fresh_redactor(monkeypatch: pytest.MonkeyPatch) -> redaction.Redactor:
    """Registered secrets and added key names stay within the test that adds them."""
    redactor = redaction.default_redactor
    monkeypatch.setattr(redactor, "_values", set())
    monkeypatch.setattr(redactor, "_pattern", None)
    monkeypatch.setattr(redactor, "_keys", redactor._keys)
    monkeypatch.setattr(redactor, "_pairs", redactor._pairs)
    monkeypatch.setattr(redactor, "_key_cache", {})
    return redactor
