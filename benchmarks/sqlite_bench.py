"""offload on its embedded SQLite store: the workload of the peer benchmarks.

Run: ``scripts/bench`` (or ``.venv/bin/python -m benchmarks.sqlite_bench``). Prints one
Markdown table. Each figure comes from a fresh database file in a temporary directory.

- enqueue one by one: ``await task.enqueue()`` in a loop (each a durable commit);
- enqueue batched: ``jobs.enqueue_many`` in batches of 1,000;
- enqueue_sync: ``task.enqueue_sync()`` in a loop, from a thread while the app is open (a
  ``def`` endpoint) and from a script that never opens it;
- drain: a queued backlog of 20,000 no-op jobs, 2 worker processes x 32 concurrency;
- online: the same 20,000 jobs enqueued in batches of 100 while the workers run;
- latency: 1,000 jobs enqueued one by one at 200/s, enqueue -> start p50/p99, with the
  worker in the producer's process and in 2 other processes;
- I/O: 5,000 jobs of ``asyncio.sleep(0.01)``; ideal time = 5,000 x 10 ms / 64 slots;
- memory: worker max RSS sampled while it runs 100,000 no-op jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
CONCURRENCY = 32


def _fresh_url(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / (name + '.db')}"


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "OFFLOAD_URL": url, "PYTHONPATH": str(ROOT)}


def _spawn_workers(url: str, n: int, rss: Path | None = None) -> list[subprocess.Popen[str]]:
    args = [sys.executable, "-m", "benchmarks.bench_tasks", str(CONCURRENCY)]
    if rss is not None:
        args.append(str(rss))
    return [
        subprocess.Popen(args, env=_env(url), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]


def _stop(procs: list[subprocess.Popen[str]]) -> list[tuple[int, float]]:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=60)
        done, cpu = stdout.split()[-2:]
        out.append((int(done), float(cpu)))
    return out


async def _open(url: str) -> Any:
    os.environ["OFFLOAD_URL"] = url
    # Import late so that the module-level Offload picks up this run's URL.
    import importlib

    from benchmarks import bench_tasks

    importlib.reload(bench_tasks)
    await bench_tasks.jobs.open()
    return bench_tasks


async def _wait_done(url: str, total: int, timeout: float = 300) -> float:
    """Wait until ``total`` jobs have finished; returns when the last one did (wall clock).

    Polled on a connection of its own, with counts the partial indexes of queued and running
    jobs answer: the benchmark's own process must not take a core from the workers it
    measures (a full count of the table every few milliseconds did, on 2 cores). The end is
    the last stored completion, so the polling interval does not blur it.
    """
    path = url.removeprefix("sqlite:///")
    deadline = time.perf_counter() + timeout
    with contextlib.closing(sqlite3.connect(path)) as db:
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
            pending = sum(
                db.execute(f"SELECT count(*) FROM offload_jobs WHERE state='{state}'").fetchone()[0]
                for state in ("queued", "running")
            )
            if pending:
                continue
            done, last = db.execute(
                "SELECT count(*), max(finished_at) FROM offload_jobs WHERE finished_at IS NOT NULL"
            ).fetchone()
            if done >= total:
                return float(last)
    raise TimeoutError(f"jobs not done within {timeout} s")


async def _workers_ready(procs: list[subprocess.Popen[str]]) -> None:
    # Worker start-up (imports, opening the file) is not part of any rate.
    await asyncio.sleep(1.5)


async def bench_enqueue(tmp: Path, n: int) -> dict[str, float]:
    mod = await _open(_fresh_url(tmp, "enqueue"))
    one = min(n, 2_000)
    t = time.perf_counter()
    for _ in range(one):
        await mod.noop.enqueue()
    single = one / (time.perf_counter() - t)
    t = time.perf_counter()
    for start in range(0, n, 1_000):
        await mod.jobs.enqueue_many([mod.noop.prepare() for _ in range(min(1_000, n - start))])
    batched = n / (time.perf_counter() - t)
    concurrent_n = min(n, 5_000)
    t = time.perf_counter()
    await asyncio.gather(*(mod.noop.enqueue() for _ in range(concurrent_n)))
    concurrent = concurrent_n / (time.perf_counter() - t)
    # 32 callers, each awaiting one enqueue after another (as 32 request handlers do).
    per_caller = max(1, min(n, 8_000) // 32)

    async def caller() -> None:
        for _ in range(per_caller):
            await mod.noop.enqueue()

    t = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(32)))
    awaited_32 = 32 * per_caller / (time.perf_counter() - t)
    await mod.jobs.close()
    return {
        "one_by_one": single,
        "batched": batched,
        "concurrent": concurrent,
        "awaited_32": awaited_32,
    }


_SCRIPT = """
import sys, time
from benchmarks import bench_tasks
n = int(sys.argv[1])
start = time.perf_counter()
for _ in range(n):
    bench_tasks.noop.enqueue_sync()
print(n / (time.perf_counter() - start))
"""


async def bench_sync(tmp: Path, n: int) -> dict[str, float]:
    url = _fresh_url(tmp, "sync")
    script = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _SCRIPT, str(n)],
        env=_env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    mod = await _open(url)

    def from_a_thread() -> float:
        start = time.perf_counter()
        for _ in range(n):
            mod.noop.enqueue_sync()
        return n / (time.perf_counter() - start)

    threaded = await asyncio.to_thread(from_a_thread)
    await mod.jobs.close()
    return {"sync_thread": threaded, "sync_script": float(script.stdout.split()[-1])}


async def bench_drain(tmp: Path, n: int) -> dict[str, float]:
    url = _fresh_url(tmp, "drain")
    mod = await _open(url)
    procs = _spawn_workers(url, WORKERS)
    await _workers_ready(procs)
    # The whole backlog lands in one transaction, so the workers see it all queued at once.
    await mod.jobs.enqueue_many([mod.noop.prepare() for _ in range(n)])
    t = time.time()
    end = await _wait_done(url, n)
    stats = _stop(procs)
    cpu = sum(c for _, c in stats)
    await mod.jobs.close()
    return {"drain": n / (end - t), "cpu_us_per_job": cpu / n * 1e6}


async def bench_online(tmp: Path, n: int) -> dict[str, float]:
    url = _fresh_url(tmp, "online")
    mod = await _open(url)
    procs = _spawn_workers(url, WORKERS)
    await _workers_ready(procs)
    t = time.time()
    for start in range(0, n, 100):
        await mod.jobs.enqueue_many([mod.noop.prepare() for _ in range(min(100, n - start))])
    end = await _wait_done(url, n)
    _stop(procs)
    await mod.jobs.close()
    return {"online": n / (end - t)}


async def _latency(mod: Any, url: str, n: int, rate: float) -> tuple[float, float]:
    handles = []
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        handles.append(await mod.noop.enqueue())
    await _wait_done(url, n)
    lags = []
    for h in handles:
        await h.refresh()
        lags.append((h.record.started_at - h.record.enqueued_at) * 1000)
    lags.sort()
    return statistics.median(lags), lags[int(len(lags) * 0.99) - 1]


async def bench_latency(tmp: Path, n: int) -> dict[str, float]:
    from offload import Worker

    url = _fresh_url(tmp, "latency_in")
    mod = await _open(url)
    worker = Worker(mod.jobs, concurrency=CONCURRENCY, install_signals=False)
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    p50_in, p99_in = await _latency(mod, url, n, 200)
    worker.stop()
    await runner
    await mod.jobs.close()

    url = _fresh_url(tmp, "latency_x")
    mod = await _open(url)
    procs = _spawn_workers(url, WORKERS)
    await _workers_ready(procs)
    p50_x, p99_x = await _latency(mod, url, n, 200)
    _stop(procs)
    await mod.jobs.close()
    return {"p50_in": p50_in, "p99_in": p99_in, "p50_x": p50_x, "p99_x": p99_x}


async def bench_io(tmp: Path, n: int) -> dict[str, float]:
    """Two figures of 10 ms sleeps against the ideal (64 slots x 100 jobs/s).

    The peer benchmarks' workload first: a queued backlog, then fresh worker processes, rated
    per process (each one's jobs over its own first start to last end, summed) and from the
    first start anywhere. Then a second backlog, enqueued in batches while those now warm
    workers run, rated from its first claim to its last job's end."""
    url = _fresh_url(tmp, "io")
    path = url.removeprefix("sqlite:///")
    mod = await _open(url)
    backlog: list[str] = []
    for start in range(0, n, 1_000):
        batch = [mod.sleep10ms.prepare() for _ in range(min(1_000, n - start))]
        backlog += [job.id for job in await mod.jobs.enqueue_many(batch)]
    procs = _spawn_workers(url, WORKERS)
    await _workers_ready(procs)
    await _wait_done(url, n)
    online: list[str] = []
    for start in range(0, n, 1_000):
        batch = [mod.sleep10ms.prepare() for _ in range(min(1_000, n - start))]
        online += [job.id for job in await mod.jobs.enqueue_many(batch)]
    await _wait_done(url, 2 * n)
    _stop(procs)
    await mod.jobs.close()
    ideal_rate = WORKERS * CONCURRENCY / 0.010
    # Starts are the claims (a job claimed ahead waits, so this is the stricter start); ends
    # are the jobs' own clocks (the task returns it), not when the outcome was stored.
    per_process = _spans(path, backlog)
    per_online = _spans(path, online)
    rates = [
        count / (last - first)
        for count, first, last in per_process
        if count >= n / 100 and last > first
    ]
    return {
        "io_pct": sum(rates) / ideal_rate * 100,
        "io_cold_pct": n / _overall(per_process) / ideal_rate * 100,
        "io_online_pct": n / _overall(per_online) / ideal_rate * 100,
    }


def _spans(path: str, ids: list[str]) -> list[tuple[int, float, float]]:
    """(jobs, first claim, last end) of these jobs, per worker."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TEMP TABLE wanted (id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO wanted VALUES (?)", [(i,) for i in ids])
        rows = db.execute(
            "SELECT count(*), min(started_at), max(CAST(result AS REAL))"
            " FROM offload_jobs JOIN wanted USING (id) GROUP BY worker_id"
        ).fetchall()
    return [(int(count), float(first), float(last)) for count, first, last in rows]


def _overall(spans: list[tuple[int, float, float]]) -> float:
    """Seconds from the first start anywhere to the last end anywhere."""
    return max(last for _, _, last in spans) - min(first for _, first, _ in spans)


async def bench_memory(tmp: Path, n: int) -> dict[str, float]:
    url = _fresh_url(tmp, "memory")
    mod = await _open(url)
    rss_path = tmp / "rss.txt"
    procs = _spawn_workers(url, 1, rss_path)
    await _workers_ready(procs)
    for start in range(0, n, 1_000):
        await mod.jobs.enqueue_many([mod.noop.prepare() for _ in range(min(1_000, n - start))])
        await asyncio.sleep(0.01)
    await _wait_done(url, n)
    await asyncio.sleep(0.6)
    _stop(procs)
    await mod.jobs.close()
    samples = [tuple(map(int, line.split())) for line in rss_path.read_text().splitlines()]
    at_10k = next((rss for done, rss in samples if done >= n // 10), samples[0][1])
    final = samples[-1][1]
    return {"rss_10pct_mib": at_10k / 1024, "rss_end_mib": final / 1024}


async def main(n: int, skip: set[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as d:
        tmp = Path(d)
        r: dict[str, float] = {}
        steps = [
            ("enqueue", bench_enqueue, n),
            ("sync", bench_sync, 2_000),
            ("drain", bench_drain, n),
            ("online", bench_online, n),
            ("latency", bench_latency, 1_000),
            ("io", bench_io, 5_000),
            ("memory", bench_memory, 100_000),
        ]
        for name, fn, size in steps:
            if name in skip:
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            r.update(await fn(tmp, size))
    rows = [
        ("enqueue one by one (durable commit each)", "one_by_one", "{:,.0f} jobs/s"),
        ("enqueue 5,000 concurrent callers (group commit)", "concurrent", "{:,.0f} jobs/s"),
        ("enqueue from 32 callers, each awaiting one at a time", "awaited_32", "{:,.0f} jobs/s"),
        ("enqueue batched (enqueue_many, 1,000 a batch)", "batched", "{:,.0f} jobs/s"),
        ("enqueue_sync one by one, from a thread (def endpoint)", "sync_thread", "{:,.0f} jobs/s"),
        ("enqueue_sync one by one, a script (app never opened)", "sync_script", "{:,.0f} jobs/s"),
        ("drain 20,000 queued, 2 procs x 32", "drain", "{:,.0f} jobs/s"),
        ("worker CPU per job (drain)", "cpu_us_per_job", "{:,.0f} us"),
        ("online (enqueue while running)", "online", "{:,.0f} jobs/s"),
        ("latency p50, worker in-process", "p50_in", "{:.2f} ms"),
        ("latency p99, worker in-process", "p99_in", "{:.2f} ms"),
        ("latency p50, 2 worker processes", "p50_x", "{:.2f} ms"),
        ("latency p99, 2 worker processes", "p99_x", "{:.2f} ms"),
        ("5,000 x sleep(10 ms), backlog then fresh workers: per process", "io_pct", "{:.0f} %"),
        ("5,000 x sleep(10 ms), the same from the first start", "io_cold_pct", "{:.0f} %"),
        ("5,000 x sleep(10 ms), enqueued while warm workers run", "io_online_pct", "{:.0f} %"),
        ("worker RSS after 10 % of 100,000 jobs", "rss_10pct_mib", "{:.1f} MiB"),
        ("worker RSS after 100,000 jobs", "rss_end_mib", "{:.1f} MiB"),
    ]
    print("| measure | offload (SQLite) |")
    print("|---|---|")
    for label, key, fmt in rows:
        if key in r:
            value = fmt.format(r[key])
            print(f"| {label} | {value} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="jobs for the rate figures")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip")
    ns = parser.parse_args()
    asyncio.run(main(ns.n, set(filter(None, ns.skip.split(",")))))
