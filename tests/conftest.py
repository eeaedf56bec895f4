"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import settings

from offload import Offload

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# No per-example deadline: a loaded 2-core machine must not turn slowness into failures.
# Under CI the examples are derandomized so that a run is reproducible.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if IN_CI else "default")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite file per test."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def jobs(db_url: str) -> AsyncIterator[Offload]:
    app = Offload(db_url, embedded_worker=False)
    async with app:
        yield app
