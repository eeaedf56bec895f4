"""The reference service run by uvicorn in a process of its own, on a free loopback port.

For the tests that need a real HTTP server between them and the app: bodies streamed over a
socket, the server process's memory, a fuzzer speaking HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"
UVICORN = [sys.executable, "-m", "uvicorn", "examples.notify.app:app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    """The environment the service runs with: a worker of its own starts with the same."""

    @property
    def data_dir(self) -> Path:
        return Path(self.env["NOTIFY_DATA_DIR"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_kib(self) -> int:
        """The most memory the server process has held at once (``VmHWM``), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc/<pid>/status")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def notify_server(tmp: Path, **env: str) -> Iterator[Server]:
    """Start ``uvicorn examples.notify.app:app`` with a fresh SQLite store under ``tmp``."""
    port = free_port()
    log = tmp / "server.log"
    environ = {
        **os.environ,
        "OFFLOAD_URL": f"sqlite:///{tmp / 'jobs.db'}",
        "NOTIFY_DATA_DIR": str(tmp / "data"),
        "NOTIFY_API_TOKEN": TOKEN,
        "NOTIFY_LOG": "json",
    }
    # The machine's own mail settings never reach the service; the test's own do.
    for setting in ("HOST", "PORT", "TLS", "SENDER"):
        environ.pop(f"OFFLOAD_SMTP_{setting}", None)
    environ.update(env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*UVICORN, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log, environ)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited at start:\n{server.output()}")
            try:
                if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not answer within 30 s:\n{server.output()}")
            time.sleep(0.05)
        yield server
    finally:
        stop(proc, 15)


@dataclass
class SinkProcess:
    proc: subprocess.Popen[bytes]
    smtp_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/messages"

    def messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(self.url, timeout=5).json()
        return found

    def smtp_env(self) -> dict[str, str]:
        """The ``OFFLOAD_SMTP_*`` settings that send a service's mail here."""
        return {
            "OFFLOAD_SMTP_HOST": "127.0.0.1",
            "OFFLOAD_SMTP_PORT": str(self.smtp_port),
            "OFFLOAD_SMTP_TLS": "none",
            "OFFLOAD_SMTP_SENDER": "Notify <notify@example.com>",
            "NOTIFY_MAIL_SINK_URL": self.url,
        }


@contextmanager
def mail_sink_process(tmp: Path) -> Iterator[SinkProcess]:
    """``offload mail-sink`` in a process of its own, its JSON view on a second port."""
    smtp, http = free_port(), free_port()
    offload = Path(sys.executable).with_name("offload")
    log = tmp / "sink.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(offload), "mail-sink", "--port", str(smtp), "--http-port", str(http)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    sink = SinkProcess(proc, smtp, http)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the mail sink exited at start:\n{log.read_text()}")
            try:
                sink.messages()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the mail sink did not start:\n{log.read_text()}")
                time.sleep(0.05)
        yield sink
    finally:
        stop(proc, 10)
