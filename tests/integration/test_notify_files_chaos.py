"""The reference service's file job under faults, over real HTTP with separate ``offload
worker`` processes: a worker SIGKILLed in the middle of a file, a cancel, and a 100 MB
upload that the web process takes with flat memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.notify.cleaning import clean_csv

from tests.integration.notify_server import ROOT, TOKEN, Server, notify_server, stop

AUTH = {"Authorization": f"Bearer {TOKEN}"}
OFFLOAD = Path(sys.executable).with_name("offload")
LEASE = "2"


def write_csv(path: Path, megabytes: int) -> Path:
    """Rows enough for a file job that runs for seconds: numbers, dates, text and repeats."""
    row = 0
    with path.open("w", newline="") as out:
        out.write("id;name;joined;score\n")
        while out.tell() < megabytes << 20:
            lines = []
            for _ in range(5000):
                row += 1
                day = f"2026-01-{row % 28 + 1:02d}"
                lines.append(f"{row % 90_000};  name {row % 7919} ;{day};{row % 100}.5\n")
            out.write("".join(lines))
    return path


class Workers:
    def __init__(self, server: Server, tmp: Path) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **server.env}
        self.log = tmp / "workers.log"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        command = [str(OFFLOAD), "worker", "examples.notify.app:jobs", "--lease", LEASE]
        with self.log.open("ab") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, 15)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Server, Workers]]:
    env = {"NOTIFY_EMBEDDED_WORKER": "false", "NOTIFY_MAX_UPLOAD_MB": "200", "NOTIFY_LOG": "off"}
    with notify_server(tmp_path, **env) as server:
        workers = Workers(server, tmp_path)
        try:
            yield server, workers
        finally:
            workers.stop()


def job_of(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=AUTH).json()
    return body


def until(client: httpx.Client, job_id: str, done: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = job_of(client, job_id)
        if done(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        answer = client.post("/files", files={"file": (path.name, f, "text/csv")}, headers=AUTH)
    assert 202 == answer.status_code, answer.text
    body: dict[str, Any] = answer.json()
    return body


def progressed(job: dict[str, Any]) -> bool:
    fraction = float((job["progress"] or {}).get("fraction", 0))
    return job["state"] == "running" and fraction >= 0.1


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_killed_mid_file_leaves_a_complete_correct_output(
    service: tuple[Server, Workers], tmp_path: Path
) -> None:
    server, workers = service
    source = write_csv(tmp_path / "big.csv", 12)
    expected = tmp_path / "expected"
    clean_csv(source, expected)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        accepted = upload(client, source)
        first = workers.start()
        until(client, accepted["job_id"], progressed)
        first.kill()
        first.wait()
        workers.start()
        job = until(client, accepted["job_id"], lambda j: j["state"] in {"succeeded", "failed"})
        assert ("succeeded", 2) == (job["state"], job["attempt"]), job
        for name in ("cleaned.csv", "data.jsonl"):
            got = client.get(f"/files/{accepted['id']}/{name}", headers=AUTH)
            assert 200 == got.status_code, name
            assert (expected / name).read_bytes() == got.content, name
        status = client.get(f"/files/{accepted['id']}", headers=AUTH).json()
        assert json.loads((expected / "summary.json").read_text()) == status["summary"]
    leftovers = [p.name for p in (server.data_dir / "outputs").iterdir() if p.name.startswith(".")]
    assert [] == leftovers


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_cancelled_file_job_stops_and_publishes_nothing(
    service: tuple[Server, Workers], tmp_path: Path
) -> None:
    server, workers = service
    source = write_csv(tmp_path / "big.csv", 12)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        accepted = upload(client, source)
        workers.start()
        until(client, accepted["job_id"], progressed)
        answer = client.post(f"/jobs/{accepted['job_id']}/cancel", headers=AUTH)
        assert 200 == answer.status_code, answer.text
        job = until(client, accepted["job_id"], lambda j: j["state"] == "cancelled", 30)
        status = client.get(f"/files/{accepted['id']}", headers=AUTH).json()
        assert ("cancelled", {}, None) == (status["status"], status["downloads"], status["summary"])
    time.sleep(1.0)  # the cleaning thread stops at its next check and removes its folder
    outputs = server.data_dir / "outputs"
    assert [] == (list(outputs.iterdir()) if outputs.exists() else []), job


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_100_mb_upload_is_taken_with_flat_memory(
    service: tuple[Server, Workers], tmp_path: Path
) -> None:
    server, _ = service
    source = write_csv(tmp_path / "huge.csv", 100)
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        before = server.peak_rss_kib()
        accepted = upload(client, source)
        grown = server.peak_rss_kib() - before
    print(f"100 MB upload: the web process's peak grew by {grown / 1024:.1f} MiB")
    assert grown < 40 * 1024, f"the web process grew by {grown / 1024:.0f} MiB"
    stored = server.data_dir / "uploads" / accepted["id"] / "original.csv"
    assert source.stat().st_size == stored.stat().st_size
