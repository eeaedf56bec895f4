"""``offload worker --metrics-port``: the worker command serves its metrics on loopback."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.test_cli import (
    APP,
    WorkerProcess,
    cli,
    cli_env,
    json_logs,
    wait_until,
    with_app,
)
from tests.integration.test_metrics import labels, parse


class TestWorkerCommand:
    def test_metrics_port_serves_on_loopback(self, db_url: str, tmp_path: Path) -> None:
        """``offload worker --metrics-port`` serves the metrics on 127.0.0.1 and counts the
        jobs it runs."""
        log = str(tmp_path / "runs.txt")

        async def enqueue(s: Any) -> str:
            job = await s.nap.enqueue(log, 0.0)
            return str(job.id)

        job_id = with_app(db_url, enqueue)
        worker = WorkerProcess(
            db_url, tmp_path / "worker.log", "--metrics-port", "0", "--log-level", "DEBUG"
        )
        try:
            wait_until(lambda: worker.logged("worker.metrics") and worker.logged("job.succeeded"))
            (line,) = [
                e for e in json_logs(worker.stderr_path) if e.get("action") == "worker.metrics"
            ]
            assert "127.0.0.1" == line["host"]
            response = httpx.get(f"http://127.0.0.1:{line['port']}/metrics", timeout=10)
            samples = parse(response.text)
            assert 1 == samples[("offload_jobs_succeeded_total", labels("nap"))]
            assert 1 == samples[("offload_workers", ())]
            assert (
                1
                == samples[("offload_queue_depth", (("queue", "default"), ("state", "succeeded")))]
            )
            assert job_id
            worker.signal(signal.SIGTERM)
            assert 0 == worker.wait()
        finally:
            worker.ensure_dead()

    def test_help_names_the_extra_to_install(self) -> None:
        """``--help`` says which extra ``--metrics-port`` needs, brackets included (Rich
        markup would swallow a bare ``[prometheus]``)."""
        result = cli("worker", "--help", env=cli_env(COLUMNS="250"))
        assert 0 == result.returncode
        (line,) = [line for line in result.stdout.splitlines() if "--metrics-port " in line]
        assert "needs the prometheus extra (pip install 'offload[prometheus]')" in line

    def test_port_in_use_is_a_usage_error(self, db_url: str) -> None:
        """A taken port ends the command with one line naming the option, exit status 2."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = cli("worker", APP, "--url", db_url, "--metrics-port", str(port), "--json-logs")
        assert 2 == result.returncode
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: cannot serve metrics on 127.0.0.1:{port}")
        assert "--metrics-port" in last
