"""The dashboard over real HTTP: page times on a store of 1,000,000 jobs, and what an open
overview costs the workers.

Run: ``.venv/bin/python -m benchmarks.dashboard_bench [--jobs N] [--stores sqlite,redis]
[--skip pages,drain]``.

1. **pages**: the store is filled as ``benchmarks.listing_bench`` fills it (5 tasks, 4 queues,
   a tenth finished within the last hour), then ``offload dashboard --url ...`` serves it
   from a process of its own and an HTTP client on loopback times each page ``--calls``
   times: the overview, its live fragment, filtered lists, and job pages of random jobs.
2. **drain**: the SQLite drain of ``benchmarks.sqlite_bench`` (2 worker processes x 32,
   20,000 queued no-op jobs), in turns without and with a dashboard process whose overview
   follows the change feed and redraws at most every 2 s, as an open browser tab does.
   Three rounds each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from benchmarks import listing_bench, sqlite_bench
from offload.stores import JobFilter, open_store

PASSWORD = "bench-dashboard-pw"
AUTH = ("admin", PASSWORD)
POLL_SECONDS = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Dashboard:
    """``offload dashboard`` in a process of its own, as an operator runs it."""

    def __init__(self, url: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OFFLOAD_DASHBOARD_PASSWORD": PASSWORD}
        command = [sys.executable, "-m", "offload.cli", "dashboard", "--url", url]
        command.extend(["--port", str(self.port)])
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.base + "/", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _time(client: httpx.Client, path: str, calls: int) -> tuple[float, float]:
    client.get(path).raise_for_status()  # warm
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        response.raise_for_status()
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


async def _filled(kind: str, total: int, tmp: Path) -> tuple[str, str, list[str]]:
    prefix = f"bench-dash-{uuid.uuid4().hex[:8]}"
    url = {
        "sqlite": f"sqlite:///{tmp / 'dashboard.db'}",
        "redis": f"{listing_bench.REDIS_URL}?prefix={prefix}",
    }[kind]
    store = open_store(url)
    await store.open()
    try:
        await listing_bench._fill(store, total)
        sample = [r.id for r in (await store.list(JobFilter(), 500)).jobs]
    finally:
        await store.close()
    return url, prefix, sample


def bench_pages(kind: str, total: int, calls: int, tmp: Path) -> list[str]:
    url, prefix, ids = asyncio.run(_filled(kind, total, tmp))
    dashboard = Dashboard(url)
    rows = [
        f"### {kind}, {total:,} jobs, over HTTP",
        "",
        "| page | p50 ms | p95 ms |",
        "|---|---:|---:|",
    ]
    try:
        with httpx.Client(base_url=dashboard.base, auth=AUTH, timeout=30) as client:
            cases = [
                ("overview", "/"),
                ("overview, live fragment", "/live/overview"),
                ("jobs, no filter", "/jobs"),
                ("jobs, failed of one task", "/jobs?state=failed&task=task1"),
                ("jobs, one queue, last hour", "/jobs?queue=q2&since=1h"),
                ("jobs, search by key", f"/jobs?q=key-{total // 2 // 10 * 10}"),
                ("jobs, search by id", f"/jobs?q={ids[-1]}"),
            ]
            for name, path in cases:
                p50, p95 = _time(client, path, calls)
                rows.append(f"| {name} | {p50:.1f} | {p95:.1f} |")
            job_times = []
            client.get(f"/jobs/{ids[0]}").raise_for_status()
            for _ in range(calls):
                job_id = random.choice(ids)
                t = time.perf_counter()
                client.get(f"/jobs/{job_id}").raise_for_status()
                job_times.append((time.perf_counter() - t) * 1000)
            job_times.sort()
            p95 = job_times[max(0, int(len(job_times) * 0.95) - 1)]
            rows.append(
                f"| job page (random jobs) | {statistics.median(job_times):.1f} | {p95:.1f} |"
            )
    finally:
        dashboard.stop()
        if kind == "redis":
            asyncio.run(listing_bench._drop_redis(prefix))
    return rows


class _Poller(threading.Thread):
    """What an open overview tab's script does: wait on the change feed (``live/changes``,
    a long poll), then fetch the live fragment, at most every 2 seconds."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.done = threading.Event()
        self.fetched = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base, auth=AUTH, timeout=30) as client:
            since = ""
            while not self.done.is_set():
                answer = client.get("/live/changes", params={"since": since} if since else {})
                answer.raise_for_status()
                since = answer.json()["token"]
                if not answer.json()["changed"]:
                    continue
                started = time.monotonic()
                client.get("/live/overview").raise_for_status()
                self.fetched += 1
                self.done.wait(max(0.0, POLL_SECONDS - (time.monotonic() - started)))


async def _drain(tmp: Path, n: int, watched: bool) -> float:
    url = sqlite_bench._fresh_url(tmp, f"drain-{uuid.uuid4().hex[:6]}")
    mod = await sqlite_bench._open(url)
    dashboard = Dashboard(url) if watched else None
    poller = _Poller(dashboard.base) if dashboard is not None else None
    if poller is not None:
        poller.start()
    procs = sqlite_bench._spawn_workers(url, sqlite_bench.WORKERS)
    await sqlite_bench._workers_ready(procs)
    await mod.jobs.enqueue_many([mod.noop.prepare() for _ in range(n)])
    t = time.time()
    end = await sqlite_bench._wait_done(url, n)
    sqlite_bench._stop(procs)
    await mod.jobs.close()
    if poller is not None and dashboard is not None:
        poller.done.set()
        poller.join()
        dashboard.stop()
    return n / (end - t)


def bench_drain(n: int, rounds: int, tmp: Path) -> list[str]:
    plain: list[float] = []
    watched: list[float] = []
    for _ in range(rounds):
        plain.append(asyncio.run(_drain(tmp, n, False)))
        watched.append(asyncio.run(_drain(tmp, n, True)))
    rows = [
        f"### SQLite drain of {n:,} jobs, 2 processes x 32, {rounds} rounds each in turns",
        "",
        "| | median jobs/s | rounds |",
        "|---|---:|---|",
    ]
    watching = "overview open (change feed, redraw ≤ every 2 s)"
    for name, figures in (("no dashboard", plain), (watching, watched)):
        shown = ", ".join(f"{f:,.0f}" for f in figures)
        rows.append(f"| {name} | {statistics.median(figures):,.0f} | {shown} |")
    ratio = statistics.median(watched) / statistics.median(plain)
    rows.append("")
    rows.append(f"with / without: {ratio:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--stores", default="sqlite,redis")
    # Long enough that the open overview refreshes many times during the drain itself.
    parser.add_argument("--drain-jobs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        if "pages" not in skip:
            for kind in args.stores.split(","):
                print("\n".join(bench_pages(kind, args.jobs, args.calls, Path(tmp))), flush=True)
                print()
        if "drain" not in skip:
            print("\n".join(bench_drain(args.drain_jobs, args.rounds, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
