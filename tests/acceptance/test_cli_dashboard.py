"""``offload dashboard`` as a real process: a password always, printed once when made up;
loopback unless told; the app's schedules with ``--app``; clear errors for bad input."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.acceptance.test_cli import ROOT, cli, cli_env
from tests.integration.notify_server import free_port

START_TIMEOUT = 20.0


@contextmanager
def dashboard(*args: str, env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """Run the command until the block ends; yields its base URL and its first lines."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "offload.cli", "dashboard", "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.1)
        # The banner is printed before the server listens.
        for _ in range(2 if "OFFLOAD_DASHBOARD_PASSWORD" not in env else 1):
            lines.append(proc.stdout.readline().strip())
        yield base, lines
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def test_a_made_up_password_is_printed_once_and_required(tmp_path: Path) -> None:
    env = cli_env()
    env.pop("OFFLOAD_DASHBOARD_PASSWORD", None)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with dashboard("--url", url, env=env) as (base, lines):
        assert lines[0] == f"dashboard for {url}: {base}/"
        match = re.fullmatch(r"sign in as admin with password (\S+) \(set .*\)", lines[1])
        assert match is not None, lines
        password = match.group(1)
        assert len(password) >= 16
        assert 401 == httpx.get(base + "/").status_code
        assert 401 == httpx.get(base + "/", auth=("admin", "guess-guess")).status_code
        page = httpx.get(base + "/jobs", auth=("admin", password))
        assert 200 == page.status_code
        assert "no-store" == page.headers["cache-control"]


def test_password_from_the_environment_and_schedules_from_the_app(tmp_path: Path) -> None:
    env = cli_env(
        OFFLOAD_DASHBOARD_USER="ops",
        OFFLOAD_DASHBOARD_PASSWORD="from-the-env",
        OFFLOAD_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
    )
    with dashboard("--app", "tests.acceptance.schedapp:jobs", env=env) as (base, lines):
        assert 1 == len(lines)
        assert "from-the-env" not in lines[0]
        assert "sign in" not in lines[0]
        page = httpx.get(base + "/schedules", auth=("ops", "from-the-env"))
        assert 200 == page.status_code
        assert "data-schedule=" in page.text


def test_bad_input_is_one_line_with_the_fix(tmp_path: Path) -> None:
    env = cli_env(OFFLOAD_DASHBOARD_PASSWORD="short")
    result = cli("dashboard", "--url", f"sqlite:///{tmp_path / 'j.db'}", env=env)
    assert 2 == result.returncode
    assert "OFFLOAD_DASHBOARD_PASSWORD" in result.stderr
    assert 1 == len(result.stderr.strip().splitlines())
    both = cli(
        "dashboard",
        "--url",
        "sqlite:///x.db",
        "--app",
        "tests.acceptance.schedapp:jobs",
        env=cli_env(OFFLOAD_DASHBOARD_PASSWORD="long-enough"),
    )
    assert 2 == both.returncode
    assert "not both" in both.stderr
    bad_url = cli("dashboard", "--url", "mysql://x", env=cli_env())
    assert 0 != bad_url.returncode
    assert "Traceback" not in bad_url.stderr
