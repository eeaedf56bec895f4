"""offload on its PostgreSQL store beside procrastinate: one workload, one machine, one run.

Run: ``python -m benchmarks.postgres_bench`` (from the project's venv or any Python 3.11),
``--quick`` for a short pass (500 / 2,000 / 200 jobs). The first run builds
``benchmarks/pg_peers/.venv`` with uv from ``benchmarks/pg_peers/requirements.txt``
(procrastinate pinned), installs offload from this checkout into it, and re-runs itself
there. Prints one Markdown table, then each library's settings.

Both libraries use PostgreSQL at ``--dsn`` (default ``postgresql://postgres@127.0.0.1:5432/
test``), each in a fresh schema of its own (``bench_pg_<library>_<pid>``: offload through
``?schema=``, procrastinate through libpq's ``search_path``), dropped at the end and between
the first two steps. Per library, in order:

1. enqueue one by one: 3,000 no-op jobs, one awaited call each (offload
   ``await task.enqueue(t)``, procrastinate ``await task.defer_async(t=t)``), no worker
   running; jobs / seconds;
2. enqueue batched: 20,000 jobs through the batch API, 1,000 a call (offload
   ``jobs.enqueue_many([task.prepare(t) ...])``, procrastinate
   ``task.batch_defer_async(*kwargs)``), into an emptied schema; jobs / seconds;
3. drain: 2 worker processes x 32 concurrency started on that backlog; jobs / (last
   completion - first start); worker CPU per job (every worker process's user + system
   time from its first job, as ``benchmarks.peers.run`` counts it);
4. latency: the same, now warm and idle, workers; 1,000 jobs enqueued one by one at 200/s;
   enqueue -> start p50 / p99, enqueue being the producer's clock just before the call and
   start the task's first line.

Starts and completions reach the harness through shared memory (``benchmarks.peers.recorder``),
never through PostgreSQL, so polling for the end costs the server nothing.

What each library does per job, with its defaults:

- offload: an enqueue is one INSERT that notifies the schema's channel (``pg_notify``, sent
  on commit; a batch is one statement and one notification per queue). Each worker LISTENs
  (polling every 1 s only while that connection is down), claims in batches with one
  ``FOR UPDATE SKIP LOCKED`` statement per batch, and records completions batched through
  ``unnest``, every change fenced by worker and attempt; results kept, 3 retries, a lease
  of 30 s so a dead worker's jobs run again.
- procrastinate: an enqueue is one INSERT whose trigger NOTIFYs (one notification per row).
  Each worker LISTENs (``listen_notify=True``) and also polls every 5 s
  (``fetch_job_polling_interval``); it fetches one job per statement
  (``procrastinate_fetch_job_v2``) and finishes it with another
  (``procrastinate_finish_job_v1``); finished jobs are kept, no retries, no stored result;
  a job whose worker died stays ``doing`` until the application retries stalled jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from benchmarks.peers import recorder
from benchmarks.peers.common import CONCURRENCY, WORKERS, AsyncPeer, Kind, bin_argv
from offload import Offload
from offload.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "pg_peers"
VENV = PEERS / ".venv"
DSN = "postgresql://postgres@127.0.0.1:5432/test"
URL_ENV = "PG_BENCH_OFFLOAD_URL"
LIBRARIES = ["offload", "procrastinate"]
BATCH = 1_000
LATENCY_RATE = 200.0


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _stamp() -> str:
    return hashlib.sha256((PEERS / "requirements.txt").read_bytes()).hexdigest()


def ensure_venv() -> None:
    """Build or refresh benchmarks/pg_peers/.venv, then re-run this module inside it.

    The shape of ``benchmarks.peers.run.ensure_venv``, which is bound to its own directory
    and module; procrastinate never enters the project's venv.
    """
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    stamp = VENV / ".requirements-sha256"
    if not stamp.exists() or stamp.read_text() != _stamp():
        uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
        if not Path(uv).exists():
            sys.exit("uv not found: run scripts/install first (it installs uv).")
        print("building benchmarks/pg_peers/.venv ...", file=sys.stderr, flush=True)
        subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(VENV)], check=True)
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(_venv_python()),
                "-r",
                str(PEERS / "requirements.txt"),
                "-e",
                f"{ROOT}[postgres]",
            ],
            check=True,
        )
        stamp.write_text(_stamp())
    python = str(_venv_python())
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", str(VENV / "lib"), str(ROOT / "src")],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.execv(python, [python, "-m", "benchmarks.postgres_bench", *sys.argv[1:]])


# -- offload's app module: what `offload worker benchmarks.postgres_bench:jobs` serves --------


async def noop(t: float) -> None:
    recorder.hit(t)


def make_app(url: str) -> tuple[Offload, Task[[float], None]]:
    """An app with the no-op task registered under its module-level name."""
    app = Offload(url, embedded_worker=False)
    return app, app.task(noop)


jobs, _ = make_app(os.environ.get(URL_ENV, f"{DSN}?schema=bench_pg_offload"))


class OffloadPeer(AsyncPeer):
    name = "offload"
    package = "offload"
    settings: ClassVar[str] = (
        f"{WORKERS} x `offload worker benchmarks.postgres_bench:jobs --concurrency "
        f"{CONCURRENCY}`; defaults otherwise (3 retries, lease 30 s, adaptive prefetch)"
    )
    batch_api = "`jobs.enqueue_many([task.prepare(...)])`, 1,000 a call"
    delivery = "at-least-once; results kept"

    def __init__(self) -> None:
        self.url = os.environ[URL_ENV]
        self.app, self.task = make_app(self.url)

    def worker_commands(self) -> list[list[str]]:
        argv = bin_argv(
            "offload",
            "worker",
            "benchmarks.postgres_bench:jobs",
            "--concurrency",
            str(CONCURRENCY),
            "--url",
            self.url,
        )
        return [argv] * WORKERS

    async def open(self) -> None:
        # A fresh app each time, as after a restart (the schema was emptied meanwhile).
        self.app, self.task = make_app(self.url)
        await self.app.open()

    async def enqueue(self, kind: Kind, t: float) -> None:
        await self.task.enqueue(t)

    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        await self.app.enqueue_many([self.task.prepare(t) for t in ts])

    async def close(self) -> None:
        await self.app.close()


# -- the harness ------------------------------------------------------------------------------


@dataclass
class Sizes:
    one: int
    bulk: int
    latency: int
    wait: float


def _peers_run() -> Any:
    """``benchmarks.peers.run``'s worker and producer helpers, imported when called: that
    module is checked against the Redis peers' venv, not this one (see pyproject's mypy)."""
    return importlib.import_module("benchmarks.peers.run")


def fresh_schema(dsn: str, schema: str, create: bool = True) -> None:
    """Drop ``schema`` with everything in it, then (by default) create it empty."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if create:
            conn.execute(f'CREATE SCHEMA "{schema}"')


def make_peer(name: str, dsn: str) -> tuple[AsyncPeer, str]:
    """The library's adapter with its own fresh schema named in the environment, which the
    worker processes inherit."""
    schema = f"bench_pg_{name}_{os.getpid()}"
    if name == "offload":
        os.environ[URL_ENV] = f"{dsn}?schema={schema}"
        return OffloadPeer(), schema
    os.environ["PG_BENCH_DSN"] = dsn
    os.environ["PG_BENCH_PROCRASTINATE_SCHEMA"] = schema
    # Imported only here: procrastinate is installed in benchmarks/pg_peers/.venv alone.
    module = importlib.import_module(f"benchmarks.pg_peers.lib_{name}")
    peer: AsyncPeer = module.Adapter()
    return peer, schema


async def bench_library(name: str, dsn: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    run = _peers_run()
    peer, schema = make_peer(name, dsn)
    r: dict[str, Any] = {"version": peer.version(), "peer": peer}
    fresh_schema(dsn, schema)
    await peer.open()
    try:
        # 1. one awaited call per job, no workers.
        r["one_by_one"] = sizes.one / await run.one_by_one(peer, "noop", sizes.one)
        await peer.close()
        fresh_schema(dsn, schema)
        await peer.open()

        # 2. the batch API, no workers: the backlog for the drain.
        r["batched"] = sizes.bulk / await run.batched(peer, "noop", sizes.bulk, BATCH)

        # 3. drain it with fresh workers.
        ws = run.start_workers(peer, tmp, name)
        try:
            await run.wait_done(ws, sizes.bulk, sizes.wait, track_cpu=True)
            cpu = ws.cpu()
            snap = ws.reader.snapshot()
            r["drain"] = sizes.bulk / (snap.last - snap.first)
            r["cpu_us"] = (
                sum(v - ws.baseline.get(pid, 0.0) for pid, v in cpu.items()) / sizes.bulk * 1e6
            )

            # 4. latency at 200 jobs/s on the warm, idle workers.
            ws.reader.reset()
            await run.one_by_one(peer, "noop", sizes.latency, LATENCY_RATE)
            await run.wait_done(ws, sizes.latency, sizes.wait)
            lags = sorted(x * 1000 for x in ws.reader.snapshot(lags=True).lags)
            r["p50"] = statistics.median(lags)
            r["p99"] = lags[max(0, int(len(lags) * 0.99) - 1)]
        finally:
            ws.stop()
    finally:
        await peer.close()
        fresh_schema(dsn, schema, create=False)
    return r


def table(results: dict[str, dict[str, Any]], sizes: Sizes) -> str:
    cols = [
        "library",
        f"enqueue one by one, awaited ({sizes.one:,} jobs, jobs/s)",
        f"enqueue batched ({sizes.bulk:,} jobs, 1,000 a call, jobs/s)",
        f"drain {sizes.bulk:,}, 2 procs x 32 (jobs/s)",
        "worker CPU per job (µs)",
        f"enqueue→start p50 / p99 at 200/s ({sizes.latency:,} jobs, ms)",
        "delivery and results (defaults)",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in results.items():
        label = f"{name} {r.get('version', '')}".strip()
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} |" + " |" * (len(cols) - 2))
            continue
        cells = [
            label,
            f"{r['one_by_one']:,.0f}",
            f"{r['batched']:,.0f}",
            f"{r['drain']:,.0f}",
            f"{r['cpu_us']:,.0f}",
            f"{r['p50']:.2f} / {r['p99']:.2f}",
            r["peer"].delivery,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 / 2,000 / 200 jobs")
    parser.add_argument("--only", default="", help="comma-separated libraries to run")
    parser.add_argument("--dsn", default=DSN, help="PostgreSQL database (schemas are made in it)")
    ns = parser.parse_args()
    ensure_venv()
    if ns.quick:
        sizes = Sizes(one=500, bulk=2_000, latency=200, wait=300)
    else:
        sizes = Sizes(one=3_000, bulk=20_000, latency=1_000, wait=600)
    names = [n for n in ns.only.split(",") if n] or LIBRARIES
    unknown = sorted(set(names) - set(LIBRARIES))
    if unknown:
        sys.exit(f"unknown library {', '.join(unknown)}; choose from {', '.join(LIBRARIES)}")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as d:
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                results[name] = asyncio.run(bench_library(name, ns.dsn, sizes, Path(d)))
            except Exception as exc:  # every failure becomes the row's text
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(results, sizes))
    print()
    for r in results.values():
        if "peer" in r:
            peer = r["peer"]
            print(f"- {peer.name}: {peer.settings}; batched: {peer.batch_api}")


if __name__ == "__main__":
    main()
