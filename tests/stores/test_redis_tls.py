"""The Redis store over TLS (``rediss://``), against a private redis-server with a fresh
self-signed certificate: the hot path's connections are opened by redis-py and then read by
``Link`` over the TLS transport."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload import Offload
from offload.jobs import JobState
from offload.worker import Worker
from tests.stores.conftest import unavailable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if server is None or openssl is None:
        unavailable("redis-server and openssl are needed for the TLS test")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    make_cert = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    make_cert += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    make_cert += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(make_cert, check=True, capture_output=True)
    port = _free_port()
    serve = [server, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert)]
    serve += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
    serve += ["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"]
    serve += ["--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")]
    proc = subprocess.Popen(serve)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    path = tmp_path / "redis.log"
                    log = path.read_text(errors="replace") if path.exists() else ""
                    unavailable(f"redis-server did not start with TLS: {log[-300:]}")
                time.sleep(0.05)
        yield f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}&op_timeout=2"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_jobs_run_end_to_end_over_tls(tls_url: str) -> None:
    jobs = Offload(tls_url, embedded_worker=False)

    @jobs.task
    async def double(x: int) -> int:
        return 2 * x

    async with jobs:
        handles = [await double.enqueue(i) for i in range(20)]
        handles += await jobs.enqueue_many([double.prepare(i) for i in range(20, 40)])
        worker = Worker(jobs, concurrency=8, install_signals=False)
        running = asyncio.create_task(worker.run())
        try:
            results = [await job.result(timeout=10) for job in handles]
        finally:
            worker.stop()
            await running
        assert results == [2 * i for i in range(40)]
        job = await jobs.get(handles[0].id)
        assert job is not None
        assert job.state is JobState.SUCCEEDED
