"""Emails per second sent as jobs, through the development sink, with 1 and 2 worker processes.

Run: ``.venv/bin/python -m benchmarks.email_bench`` (``--emails``, ``--workers``,
``--concurrency``). Prints one Markdown table.

Each run gets a fresh SQLite file, a ``MailSink`` on loopback in a process of its own (so
the sink does not share a CPU with the workers' event loops or the timing loop) and a
backlog of ``--emails`` ``offload.send_email`` jobs, enqueued in one batch once the workers
are ready. The clock runs from that commit until every job has succeeded; the sink then
reports how many messages it received, which must equal the backlog. Each email is a full
SMTP conversation on its own connection, which is how the mailer works.

The worker processes import this module, so they register the same task names
(``register`` names the tasks explicitly) on the same store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from offload import JobState, Offload, Worker
from offload.email import EmailMessage, register
from offload.email.sink import MailSink
from offload.tasks import AsyncTask

ROOT = Path(__file__).resolve().parents[1]
SENDER = "Bench <bench@example.com>"
DEFAULT_EMAILS = 1_000
DEFAULT_CONCURRENCY = 32


def build(url: str | None) -> tuple[Offload, AsyncTask[..., Any]]:
    """The app as both the benchmark and its workers see it."""
    app = Offload(url, embedded_worker=False)
    send_email, _ = register(app, retries=0)
    return app, send_email


# Worker processes run against this one (OFFLOAD_URL is set for them); the parent builds
# one per run, because each run has its own database file.
jobs, send_email = build(os.environ.get("OFFLOAD_URL"))


# --- child processes -------------------------------------------------------------------


async def run_worker(concurrency: int) -> None:
    """Work until SIGTERM; print "ready" once claiming, then "<sent> <cpu seconds>"."""
    async with jobs:
        worker = Worker(jobs, concurrency=concurrency)
        runner = asyncio.create_task(worker.run())
        await worker.started.wait()
        print("ready", flush=True)
        cpu = time.process_time()
        await runner
        print(f"{worker.stats['succeeded']} {time.process_time() - cpu}", flush=True)


async def run_sink() -> None:
    """Print the port, receive until SIGTERM, then print "<received> <cpu seconds>"."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with MailSink(port=0, max_messages=1_000_000) as sink:
        print(sink.port, flush=True)
        cpu = time.process_time()
        await stop.wait()
        print(f"{len(sink.messages)} {time.process_time() - cpu}", flush=True)


# --- the benchmark ---------------------------------------------------------------------


def _spawn(role: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.email_bench", role, *args],
        env={
            **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        },
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"{proc.args!r} exited early with code {proc.wait()}")
    return line


def _finish(proc: subprocess.Popen[str]) -> tuple[int, float]:
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    count, cpu = stdout.split()[-2:]
    return int(count), float(cpu)


async def _wait_succeeded(app: Offload, total: int, timeout: float = 300) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        counts = await app.store.counts()
        failed = sum(n for (_, s), n in counts.items() if s is JobState.FAILED)
        if failed:
            raise RuntimeError(f"{failed} email jobs failed; see the workers' output")
        done = sum(n for (_, s), n in counts.items() if s is JobState.SUCCEEDED)
        if done >= total:
            return time.perf_counter()
        await asyncio.sleep(0.01)
    raise TimeoutError(f"emails not sent within {timeout} s")


async def bench(tmp: Path, workers: int, emails: int, concurrency: int) -> dict[str, float]:
    url = f"sqlite:///{tmp / f'email-{workers}.db'}"
    sink = _spawn("sink", dict(os.environ))
    port = _read_line(sink)
    env = {
        **os.environ,
        "OFFLOAD_URL": url,
        "OFFLOAD_SMTP_HOST": "127.0.0.1",
        "OFFLOAD_SMTP_PORT": port,
        "OFFLOAD_SMTP_TLS": "none",
        "OFFLOAD_SMTP_SENDER": SENDER,
    }
    app, task = build(url)
    async with app:
        procs = [_spawn("worker", env, str(concurrency)) for _ in range(workers)]
        for proc in procs:
            _read_line(proc)  # start-up (imports, opening the file) is not timed
        messages = [
            EmailMessage(to=f"user{i}@example.com", subject=f"Bench {i}", text="Hello")
            for i in range(emails)
        ]
        started = time.perf_counter()
        await app.enqueue_many(task.prepare(m) for m in messages)
        ended = await _wait_succeeded(app, emails)
        worker_cpu = sum(cpu for _, cpu in map(_finish, procs))
    received, sink_cpu = _finish(sink)
    if received != emails:
        raise RuntimeError(f"the sink received {received} emails, expected {emails}")
    seconds = ended - started
    return {
        "seconds": seconds,
        "rate": emails / seconds,
        "worker_cpu_ms": worker_cpu / emails * 1e3,
        "sink_cpu_ms": sink_cpu / emails * 1e3,
    }


async def main(workers: list[int], emails: int, concurrency: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in workers:
            rows.append((n, await bench(Path(tmp), n, emails, concurrency)))
    print(f"{emails:,} emails, {concurrency} concurrent jobs per worker, SQLite store, dev sink\n")
    print("| workers | emails/s | seconds | worker CPU ms/email | sink CPU ms/email |")
    print("|---:|---:|---:|---:|---:|")
    for n, r in rows:
        print(
            f"| {n} | {r['rate']:,.0f} | {r['seconds']:.2f} | {r['worker_cpu_ms']:.2f} "
            f"| {r['sink_cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        asyncio.run(run_worker(int(sys.argv[2])))
    elif sys.argv[1:2] == ["sink"]:
        asyncio.run(run_sink())
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--emails", type=int, default=DEFAULT_EMAILS)
        parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
        parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
        ns = parser.parse_args()
        asyncio.run(main(ns.workers, ns.emails, ns.concurrency))
