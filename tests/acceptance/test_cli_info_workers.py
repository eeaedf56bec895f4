"""``offload info`` lists the live workers of a store that keeps a worker registry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from offload.stores import WorkerInfo
from offload.stores.sqlite import SQLiteStore
from tests.acceptance.test_cli import cli


def _record(url: str, *infos: WorkerInfo) -> None:
    async def run() -> None:
        store = SQLiteStore(url)
        await store.open()
        try:
            for info in infos:
                await store.record_worker(info, 60.0)
        finally:
            await store.close()

    asyncio.run(run())


def test_info_lists_live_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    _record(
        url,
        WorkerInfo("w-1-aa", "box-1", 101, ("mail",), 8, 1_700_000_000.0, running=2),
        WorkerInfo("w-2-bb", "box-2", 202, (), 4, 1_700_000_001.0),
    )

    result = cli("info", "--url", url, "--json")
    assert 0 == result.returncode, result.stderr
    workers = json.loads(result.stdout)["workers"]
    assert ["w-1-aa", "w-2-bb"] == [w["id"] for w in workers]
    first = {k: v for k, v in workers[0].items() if k != "seen_at"}
    assert {
        "id": "w-1-aa",
        "host": "box-1",
        "pid": 101,
        "queues": ["mail"],
        "concurrency": 8,
        "running": 2,
        "started_at": 1_700_000_000.0,
    } == first

    table = cli("info", "--url", url)
    assert 0 == table.returncode, table.stderr
    assert "w-1-aa" in table.stdout
    assert "box-2" in table.stdout
    assert "2/8" in table.stdout


def test_info_says_when_no_worker_is_alive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    _record(url)
    assert [] == json.loads(cli("info", "--url", url, "--json").stdout)["workers"]
    assert "workers: none alive" in cli("info", "--url", url).stdout
