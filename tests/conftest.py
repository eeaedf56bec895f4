"""Fixtures shared by every test layer: a SQLite file and an app on it, JSON logs captured in
memory, a fresh redactor and a folder of email templates."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import settings

from offload import Offload, redaction
from offload.logging import configure_logging, flush_logging

LogLines = Callable[[], list[dict[str, Any]]]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# No per-example deadline: a loaded 2-core machine must not turn slowness into failures.
# Under CI the examples are derandomized (a seed derived from each test, no example database),
# so a run tests the same inputs as the one before: a red CI run is a change in the code, not
# luck, and replays the same way. The random search runs locally; HYPOTHESIS_PROFILE=wide
# makes it ten times as long, for a hunt before a release.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, max_examples=50)
settings.register_profile("wide", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "default"))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite file per test."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def jobs(db_url: str) -> AsyncIterator[Offload]:
    app = Offload(db_url, embedded_worker=False)
    async with app:
        yield app


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


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    files = {
        "welcome.subject.txt": "Welcome, {{ name }}!\n",
        "welcome.html": "<h1>Hello {{ name }}</h1>\n<p>Your code: <b>{{ code }}</b></p>\n",
        "receipt.subject.txt": "Receipt {{ number }}",
        "receipt.txt": "Total: {{ total }} <not escaped>\n",
        "receipt.html": "<p>Total: {{ total }}</p>\n",
        "nobody.subject.txt": "No body",
    }
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    return folder
