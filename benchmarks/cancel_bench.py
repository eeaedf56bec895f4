"""Cancel latency: from ``job.cancel()`` of a running job to the job ended ``cancelled``.

Run: ``.venv/bin/python -m benchmarks.cancel_bench [--url URL] [--cancels N]``. Prints one
Markdown table, a row per store. Without ``--url`` the store is a fresh SQLite file in a
temporary directory; ``--url`` may be given several times (``redis://…``,
``postgresql://…``), one row each, and each store should be empty.

One worker process (``offload worker``, lease 30 s, so its heartbeat comes every 10 s) runs
a task that sleeps 30 s. ``--cancels`` times over, one job is enqueued, awaited until it
runs, left to sleep in its task for 0.2 s plus a random 0-0.5 s (so that the cancels fall
at every phase of a store's polling, SQLite's 0.25 s), and cancelled with
``job.cancel()``; the latency is the job's ``finished_at`` in the store less the wall
clock just before the call (the stores' clocks are this machine's: SQLite's is the
caller's, Redis's ``TIME`` and PostgreSQL's ``now()`` the local server's). The table
gives the median, the 90th percentile and the largest, and how many ended cancelled.
Before the stores sent cancel signals, the same measure waited for the heartbeat: up to
10 s, 9.2 s at worst as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from offload import JobState, Offload
from offload.eventloop import new_event_loop
from offload.jobs import Job

ROOT = Path(__file__).resolve().parents[1]
APP = "benchmarks.cancel_bench:jobs"
LEASE = 30.0
NAP = 30.0
# Process start-up on a loaded machine; only waited out when something is broken.
START_TIMEOUT = 60.0
# A cancel that has not ended its job after this long counts as not ended.
END_TIMEOUT = 15.0

jobs = Offload(os.environ.get("OFFLOAD_URL"), embedded_worker=False)


@jobs.task(retries=0)
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def _state_after(job: Job[float], limit: float, wanted: JobState | None) -> JobState:
    """Poll until the job is ``wanted`` (or finished, when None) or ``limit`` passes."""
    deadline = time.monotonic() + limit
    while True:
        state = (await job.refresh()).state
        if (state is wanted if wanted is not None else state.finished) or (
            time.monotonic() > deadline
        ):
            return state
        await asyncio.sleep(0.005)


async def measure(url: str, cancels: int) -> tuple[list[float], int]:
    """Latencies of the cancels that ended their job, and how many did."""
    app = Offload(url, embedded_worker=False)
    app.tasks = jobs.tasks
    await app.open()
    env = {**{k: v for k, v in os.environ.items() if k != "OFFLOAD_URL"}, "PYTHONPATH": str(ROOT)}
    args = ["--url", url, "--lease", str(LEASE), "--concurrency", "4"]
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "offload.cli", "worker", APP, *args],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    latencies: list[float] = []
    phases = random.Random(0)
    try:
        for n in range(cancels):
            (job,) = await app.enqueue_many([nap.prepare(NAP)])
            limit = START_TIMEOUT if n == 0 else 10.0
            if await _state_after(job, limit, JobState.RUNNING) is not JobState.RUNNING:
                raise SystemExit(f"job {job.id} never ran on {url}")
            await asyncio.sleep(0.2 + phases.random() * 0.5)
            began = time.time()
            await job.cancel()
            if await _state_after(job, END_TIMEOUT, None) is JobState.CANCELLED:
                finished = job.record.finished_at
                assert finished is not None
                latencies.append(finished - began)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await app.close()
    return latencies, len(latencies)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def row(name: str, latencies: list[float], cancels: int) -> str:
    if not latencies:
        return f"| {name} | - | - | - | 0 / {cancels} |"
    ordered = sorted(latencies)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"| {name} | {_ms(statistics.median(ordered))} | {_ms(p90)} | {_ms(ordered[-1])} "
        f"| {len(latencies)} / {cancels} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", action="append", help="store URL (repeatable); a fresh SQLite file by default"
    )
    parser.add_argument("--cancels", type=int, default=20, help="cancels per store")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        urls = args.url or [f"sqlite:///{Path(tmp) / 'cancel.db'}"]
        for url in urls:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                latencies, _ = runner.run(measure(url, args.cancels))
            name = url.split(":", 1)[0] + (" (listen=false)" if "listen=false" in url else "")
            rows.append(row(name, latencies, args.cancels))
    print(
        f"Cancel of a running job to ended cancelled, {args.cancels} cancels per store, one "
        f"worker process with a {LEASE:.0f} s lease (heartbeat every {LEASE / 3:.0f} s).\n"
    )
    print("| store | p50 | p90 | max | ended cancelled |")
    print("|---|---:|---:|---:|---:|")
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()
