"""Workflows: what a chain's hops cost, and how fast a store drains chords against plain jobs.

Run: ``.venv/bin/python -m benchmarks.workflow_bench [--url URL]``. Prints one Markdown
table. Without ``--url`` each figure comes from a fresh SQLite file in a temporary
directory; with one (``redis://…``, ``postgresql://…``) every figure runs on that store,
which should be empty (each drain waits for every unfinished job of it).

- chain latency: a chain of 10 steps of ``asyncio.sleep(0.001)``, enqueued alone, with a
  worker in the producer's process (concurrency 64); end-to-end = from just before
  ``enqueue()`` to the last step's ``finished_at`` in the store; overhead = end-to-end less
  the 10 steps' bodies as they measured themselves (and, for reference, less a flat 10 ms).
  Median and p90 of ``--runs``;
- chord drain: ``--chords`` chords of 10 no-op members and a no-op callback queued (offload:
  100 concurrent ``enqueue()`` calls at a time; Celery: ``apply_async()`` one by one), then
  2 worker processes x 32 started on them; jobs / (last ``finished_at`` - first
  ``started_at``), read from the store's records;
- single-job drain: as many no-op jobs as the chords hold, enqueued in batches of 1,000,
  drained the same way by fresh workers, so the two rates share one method and one run;
- Celery (``--celery``): the same chain and chord workloads with Celery's canvas on Redis
  (result backend Redis, ``--pool threads --concurrency 32`` x 2), run by
  ``benchmarks/peers/.venv`` (which ``scripts/bench-peers`` builds), on the Redis database
  ``--celery-redis`` names, which must be empty; the harness empties it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from offload import JobState, Offload, Worker, chain, chord
from offload.eventloop import new_event_loop
from offload.stores.base import JobFilter, Workflows

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / "benchmarks" / "peers" / ".venv" / "bin" / "python"
WORKERS = 2
CONCURRENCY = 32
STEPS = 10
MEMBERS = 10
STEP_SLEEP = 0.001
PAGE = 1_000


class Bench:
    """The benchmark's tasks on an app of their own (built per store URL, so no app's
    store is swapped after construction)."""

    def __init__(self, url: str) -> None:
        self.app = Offload(url, embedded_worker=False)
        # Each step's body time, as the step measured it (in-process worker only).
        self.bodies: list[float] = []
        bodies = self.bodies

        async def hop(x: int) -> int:
            began = time.perf_counter()
            await asyncio.sleep(STEP_SLEEP)
            bodies.append(time.perf_counter() - began)
            return x + 1

        async def noop(chord_n: int, n: int) -> int:
            return n

        async def collect(results: list[int], chord_n: int) -> int:
            return len(results)

        async def single() -> None:
            return None

        self.hop = self.app.task(name="wfbench.hop", retries=0)(hop)
        self.noop = self.app.task(name="wfbench.noop", retries=0)(noop)
        self.collect = self.app.task(name="wfbench.collect", retries=0)(collect)
        self.single = self.app.task(name="wfbench.single", retries=0)(single)


# --- offload -------------------------------------------------------------------------------


async def chain_latency(url: str, runs: int) -> dict[str, float]:
    bench = Bench(url)
    app = bench.app
    async with app:
        if not isinstance(app.store, Workflows):
            raise SystemExit(f"{type(app.store).__name__} keeps no workflows yet")
        worker = Worker(app, concurrency=64, install_signals=False)
        runner = asyncio.create_task(worker.run())
        await worker.started.wait()
        totals, overheads, flat, single = [], [], [], []
        try:
            for i in range(runs + 3):
                bench.bodies.clear()
                began = time.time()
                handle = await chain(
                    bench.hop.s(0), *(bench.hop.s() for _ in range(STEPS - 1))
                ).enqueue()
                assert STEPS == await handle.result(timeout=30, poll=0.002)
                finished = handle.record.finished_at
                assert finished is not None
                # The first runs warm the worker's prefetch estimate and the file's caches.
                if i >= 3:
                    total = finished - began
                    totals.append(total)
                    overheads.append(total - sum(bench.bodies))
                    flat.append(total - STEPS * STEP_SLEEP)
                began = time.time()
                one = await bench.hop.enqueue(0)
                await one.result(timeout=30, poll=0.002)
                if i >= 3:
                    assert one.record.finished_at is not None
                    single.append(one.record.finished_at - began)
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 30)
    return {
        "chain_p50": statistics.median(totals),
        "chain_p90": _pct(totals, 0.9),
        "overhead_p50": statistics.median(overheads),
        "overhead_p90": _pct(overheads, 0.9),
        "overhead_flat_p50": statistics.median(flat),
        "single_p50": statistics.median(single),
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _spawn(url: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "benchmarks.workflow_bench", "--worker", url]
    return [subprocess.Popen(command, env=env, cwd=ROOT) for _ in range(WORKERS)]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


async def wait_idle(app: Offload, timeout: float) -> None:
    """Wait until the store holds nothing queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await app.store.counts()
        if not sum(n for (_, state), n in counts.items() if not state.finished):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not drained within {timeout} s")
        await asyncio.sleep(0.2)


async def _drained(app: Offload, tasks: tuple[str, ...], total: int, timeout: float) -> float:
    """Wait until nothing is queued or running; returns jobs/s over the stored span from the
    first start to the last finish of ``tasks``' jobs."""
    await wait_idle(app, timeout)
    first, last, seen = float("inf"), 0.0, 0
    cursor: str | None = None
    wanted = JobFilter(states=(JobState.SUCCEEDED,), tasks=tasks)
    while True:
        page = await app.store.list(wanted, PAGE, cursor)
        for record in page.jobs:
            assert record.started_at is not None
            assert record.finished_at is not None
            first = min(first, record.started_at)
            last = max(last, record.finished_at)
        seen += len(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    if seen != total:
        raise RuntimeError(f"{seen} of {total} jobs succeeded")
    return total / (last - first)


async def chord_drain(url: str, chords: int) -> dict[str, float]:
    bench = Bench(url)
    app = bench.app
    async with app:
        began = time.perf_counter()
        for start in range(0, chords, 100):
            await asyncio.gather(
                *(
                    chord(
                        [bench.noop.s(n, m) for m in range(MEMBERS)], bench.collect.s(chord_n=n)
                    ).enqueue()
                    for n in range(start, min(chords, start + 100))
                )
            )
        enqueue = chords / (time.perf_counter() - began)
        procs = _spawn(url)
        try:
            total = chords * (MEMBERS + 1)
            rate = await _drained(app, ("wfbench.noop", "wfbench.collect"), total, 600)
        finally:
            _stop(procs)
    return {"chord_enqueue": enqueue, "chord_drain": rate}


async def single_drain(url: str, jobs: int) -> dict[str, float]:
    bench = Bench(url)
    app = bench.app
    async with app:
        for start in range(0, jobs, 1_000):
            await app.enqueue_many(
                [bench.single.prepare() for _ in range(min(1_000, jobs - start))]
            )
        procs = _spawn(url)
        try:
            rate = await _drained(app, ("wfbench.single",), jobs, 600)
        finally:
            _stop(procs)
    return {"single_drain": rate}


async def work(url: str) -> None:
    bench = Bench(url)
    async with bench.app:
        await Worker(bench.app, concurrency=CONCURRENCY).run()


# --- report --------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def report(figures: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    rows: list[tuple[str, ...]] = []
    for name, f in figures.items():
        if "chain_p50" in f:
            rows += [
                (f"{name}: chain of {STEPS} x 1 ms, end to end p50 / p90",
                 f"{_ms(f['chain_p50'])} / {_ms(f['chain_p90'])}"),
                (f"{name}: chain overhead (less the bodies' own time) p50 / p90",
                 f"{_ms(f['overhead_p50'])} / {_ms(f['overhead_p90'])}"),
                (f"{name}: chain overhead per hop (p50 / {STEPS})",
                 _ms(f["overhead_p50"] / STEPS)),
                (f"{name}: chain less a flat 10 ms, p50", _ms(f["overhead_flat_p50"])),
            ]  # fmt: skip
            if "single_p50" in f:
                rows.append((f"{name}: one 1 ms job, enqueue to finished, p50",
                             _ms(f["single_p50"])))  # fmt: skip
        if "chord_drain" in f:
            rows += [
                (f"{name}: enqueue {args.chords:,} chords",
                 f"{f['chord_enqueue']:,.0f} chords/s"),
                (f"{name}: drain {args.chords:,} chords of {MEMBERS} + callback",
                 f"{f['chord_drain']:,.0f} jobs/s"),
            ]  # fmt: skip
        if "single_drain" in f:
            rows.append(
                (f"{name}: drain {args.chords * (MEMBERS + 1):,} single jobs",
                 f"{f['single_drain']:,.0f} jobs/s")
            )  # fmt: skip
        if "chord_drain" in f and "single_drain" in f:
            rows.append((f"{name}: chord drain / single drain",
                         f"{f['chord_drain'] / f['single_drain']:.2f}"))  # fmt: skip
    print("| figure | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


async def run_offload(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    def url(name: str) -> str:
        return args.url or f"sqlite:///{tmp / (name + '.db')}"

    out: dict[str, float] = {}
    out |= await chain_latency(url("chain"), args.runs)
    out |= await chord_drain(url("chords"), args.chords)
    out |= await single_drain(url("single"), args.chords * (MEMBERS + 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="store URL; a fresh SQLite file per figure by default")
    parser.add_argument("--runs", type=int, default=50, help="chain latency runs")
    parser.add_argument("--chords", type=int, default=10_000)
    parser.add_argument("--celery", action="store_true", help="also run Celery's canvas")
    parser.add_argument("--celery-redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--celery-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(work(args.worker))
        return
    if args.celery_only:
        print(json.dumps(run_celery(args)))
        return
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = (args.url or "sqlite").split(":", 1)[0]
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            figures[f"offload ({store})"] = runner.run(run_offload(args, Path(tmp)))
    if args.celery:
        figures["Celery (Redis)"] = celery_in_peers_venv(args)
    report(figures, args)


# --- Celery --------------------------------------------------------------------------------


def celery_in_peers_venv(args: argparse.Namespace) -> dict[str, float]:
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} is missing: run scripts/bench-peers once to build it")
    command = [str(PEERS_PYTHON), "-m", "benchmarks.workflow_bench", "--celery-only",
               "--runs", str(args.runs), "--chords", str(args.chords),
               "--celery-redis", args.celery_redis]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the Celery run failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def _celery_app() -> Any:
    """Celery's app with the same tasks, built only where Celery is installed (the peers'
    venv: the project's own has no Celery); the workers load it as ``celery_app``."""
    celery = importlib.import_module("celery")
    url = os.environ["WF_CELERY_REDIS"]
    app = celery.Celery("wfbench", broker=url, backend=url)
    app.conf.worker_hijack_root_logger = False
    runs = os.environ.get("WF_CELERY_RUNS")
    fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if runs else -1

    def hop(x: int) -> int:
        began = time.time()
        time.sleep(STEP_SLEEP)
        if fd >= 0:
            os.write(fd, f"H {began:.6f} {time.time():.6f}\n".encode())
        return x + 1

    def noop(chord_n: int, n: int) -> int:
        began = time.time()
        if fd >= 0:
            os.write(fd, f"N {began:.6f} {time.time():.6f}\n".encode())
        return n

    def collect(results: list[int], chord_n: int) -> int:
        began = time.time()
        if fd >= 0:
            os.write(fd, f"C {began:.6f} {time.time():.6f}\n".encode())
        return len(results)

    for fn in (hop, noop, collect):
        app.task(name=f"wfbench.{fn.__name__}")(fn)
    return app


celery_app: Any = _celery_app() if os.environ.get("WF_CELERY_REDIS") else None


def _lines(path: Path) -> list[tuple[str, float, float]]:
    out = []
    for line in path.read_text().splitlines():
        kind, began, ended = line.split()
        out.append((kind, float(began), float(ended)))
    return out


def _celery_workers(n: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.workflow_bench:celery_app",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(CONCURRENCY),
                "--loglevel",
                "WARNING",
                "--hostname",
                f"wf{i}@%h",
            ],
            env=env,
            cwd=ROOT,
        )
        for i in range(n)
    ]


def _until_lines(path: Path, total: int, timeout: float) -> list[tuple[str, float, float]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _lines(path)
        if len(lines) >= total:
            return lines
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(lines)} of {total} Celery tasks ran")
        time.sleep(0.2)


def run_celery(args: argparse.Namespace) -> dict[str, float]:
    """Celery's side, inside the peers' venv: the chain, then the chord and single drains,
    each on an emptied database."""
    redis = importlib.import_module("redis")
    url = args.celery_redis
    client = redis.Redis.from_url(url)
    if client.dbsize():
        raise SystemExit(f"{url} holds keys; give --celery-redis an empty database")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        runs.touch()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WF_CELERY_REDIS": url,
               "WF_CELERY_RUNS": str(runs)}  # fmt: skip
        os.environ.update(env)
        app = _celery_app()
        celery = importlib.import_module("celery")
        hop, noop, collect = (app.tasks[f"wfbench.{n}"] for n in ("hop", "noop", "collect"))
        try:
            # The chain, with one worker process.
            procs = _celery_workers(1, env)
            try:
                totals, overheads = [], []
                for i in range(args.runs + 3):
                    runs.write_text("")
                    began = time.time()
                    steps = [hop.s(0), *(hop.s() for _ in range(STEPS - 1))]
                    result = celery.chain(*steps).apply_async()
                    # The first call also waits for the worker to be up.
                    assert STEPS == result.get(timeout=60)
                    hops = _lines(runs)
                    if i >= 3:
                        total = max(e for _, _, e in hops) - began
                        totals.append(total)
                        overheads.append(total - sum(e - b for _, b, e in hops))
            finally:
                _stop(procs)
            out |= {
                "chain_p50": statistics.median(totals),
                "chain_p90": _pct(totals, 0.9),
                "overhead_p50": statistics.median(overheads),
                "overhead_p90": _pct(overheads, 0.9),
                "overhead_flat_p50": statistics.median(totals) - STEPS * STEP_SLEEP,
            }
            client.flushdb()
            # The chords, queued before the workers start.
            runs.write_text("")
            began_enqueue = time.perf_counter()
            for n in range(args.chords):
                celery.chord(
                    [noop.s(n, m) for m in range(MEMBERS)], collect.s(chord_n=n)
                ).apply_async()
            out["chord_enqueue"] = args.chords / (time.perf_counter() - began_enqueue)
            total = args.chords * (MEMBERS + 1)
            procs = _celery_workers(WORKERS, env)
            try:
                lines = _until_lines(runs, total, 600)
            finally:
                _stop(procs)
            out["chord_drain"] = total / (max(e for _, _, e in lines) - min(b for _, b, _ in lines))
            client.flushdb()
            # The single jobs, 1,000 a call.
            runs.write_text("")
            for start in range(0, total, 1_000):
                batch = [noop.s(-1, n) for n in range(start, min(total, start + 1_000))]
                celery.group(batch).apply_async()
            procs = _celery_workers(WORKERS, env)
            try:
                lines = _until_lines(runs, total, 600)
            finally:
                _stop(procs)
            out["single_drain"] = total / (
                max(e for _, _, e in lines) - min(b for _, b, _ in lines)
            )
        finally:
            client.flushdb()
    return out


if __name__ == "__main__":
    main()
