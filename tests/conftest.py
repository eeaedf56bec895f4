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
