"""``scripts/demo``, the README's first command: it starts the service, its worker and the
mail sink, prints the token and three commands, and each command it prints works."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.notify_server import ROOT, free_port


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_demo_starts_everything_and_its_printed_commands_work(tmp_path: Path) -> None:
    port, smtp, http = free_port(), free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "NOTIFY_SINK_SMTP_PORT": str(smtp),
           "NOTIFY_SINK_HTTP_PORT": str(http), "NOTIFY_DATA_DIR": str(tmp_path / "data"),
           "NOTIFY_LOG": "json", "OFFLOAD_URL": ""}  # fmt: skip
    for name in ("NOTIFY_API_TOKEN", "OFFLOAD_SMTP_HOST", "OFFLOAD_SMTP_PORT"):
        env.pop(name, None)
    out = tmp_path / "demo.log"
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            ["bash", "scripts/demo"], cwd=ROOT, env=env, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert demo.poll() is None, out.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        token = (tmp_path / "data" / "api-token").read_text().strip()
        assert f"API token    {token}" in text
        commands = [line.strip() for line in text.splitlines() if line.strip().startswith("curl ")]
        assert 3 == len(commands), text
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command + " -s -o /dev/stderr -w '%{http_code}'"],
                cwd=ROOT, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert "202" == done.stdout, (command, done.stderr)
        mail = f"http://127.0.0.1:{http}/messages"
        while len(httpx.get(mail, timeout=5).json()) < 3:  # welcome + two announcements
            assert time.monotonic() < deadline, httpx.get(mail).json()
            time.sleep(0.2)
        subjects = sorted(m["subject"] for m in httpx.get(mail, timeout=5).json())
        assert ["Hello", "Hello", "Welcome, Ada!"] == subjects
        assert re.search(r"dashboard\s+" + re.escape(base), text)
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{http}/messages", timeout=2)
