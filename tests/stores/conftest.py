"""One ``store`` fixture, parametrised over every store, against real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offload.stores import Store, open_store

STORES = ["memory", "sqlite"]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    kind = request.param
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'store.db'}"}[kind]
    s = open_store(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
