"""offload on Redis beside Celery, Dramatiq, Huey, taskiq, SAQ, streaq, arq and RQ: one workload.

Run: ``scripts/bench-peers`` (or ``python -m benchmarks.peers.run``) with ``--quick`` for a
short pass, ``--only offload,arq`` or ``--skip rq``. The first run builds
``benchmarks/peers/.venv`` from ``requirements.txt`` (pinned) with uv, installs offload from
this checkout into it, and re-runs itself there. Prints one Markdown table.

Every library uses the Redis database ``--redis`` names (default ``127.0.0.1:6379/15``); the
harness empties that database (FLUSHDB, never another one) before and after each library and
refuses to start when it holds keys it did not write, unless ``--flush`` is given. Each
library runs in a child process with a time limit; a failure prints in its row.

Per library, in order:

1. enqueue one by one: N no-op jobs, one call each, no worker running;
2. enqueue batched: N jobs through the library's batch API (1,000 a call), or concurrent
   calls where it has none;
3. drain: start 2 worker processes x 32 on that backlog; jobs / (last done - first start);
   worker CPU (utime + stime of every worker process and its reaped children) over the drain;
   Redis commands per job (``INFO commandstats`` calls, from before the workers start to the
   last job done, less the harness's one INFO);
4. online: the warm workers run while the producer enqueues N jobs in batches of 100;
   jobs / (last done - producer start);
5. latency: 1,000 jobs enqueued one by one at 200/s; enqueue -> start p50 / p99, where enqueue
   is the producer's clock just before the call and start the task's first line;
6. I/O: 5,000 jobs of a 10 ms sleep queued, then fresh workers; rate against the ideal of
   64 slots x 100 jobs/s (5,000 jobs in 0.78 s), two ways: the sum of each worker process's
   own rate (its jobs / (its last completion - its first start)), and all jobs / (last
   completion - first start anywhere), which also counts the processes' start-up skew.

Starts and completions reach the harness through shared memory (``recorder.py``), never
through Redis, so they neither cost nor count commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.peers.common import Kind

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv"
LIBRARIES = ["offload", "celery", "dramatiq", "huey", "taskiq", "saq", "streaq", "arq", "rq"]
BATCH = 1_000
ONLINE_BATCH = 100
LATENCY_RATE = 200.0


# -- the virtualenv ---------------------------------------------------------------------------


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _stamp() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "overrides.txt"):
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Build or refresh the peers' virtualenv, then re-run this module inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    stamp = VENV / ".requirements-sha256"
    if not stamp.exists() or stamp.read_text() != _stamp():
        uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
        if not Path(uv).exists():
            sys.exit("uv not found: run scripts/install first (it installs uv).")
        print("building benchmarks/peers/.venv ...", file=sys.stderr, flush=True)
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
                str(HERE / "requirements.txt"),
                # arq caps redis-py below 6 while kombu and taskiq-redis need newer ones;
                # arq runs on redis-py 8 unchanged, so one redis-py serves every library.
                "--override",
                str(HERE / "overrides.txt"),
                "-e",
                f"{ROOT}[redis]",
            ],
            check=True,
        )
        stamp.write_text(_stamp())
    python = str(_venv_python())
    # Every library's workers import from bytecode compiled here, not from source at each
    # start (PYTHONDONTWRITEBYTECODE may be set, and then nothing is cached on import). A
    # file that does not compile (a template shipped as .py) only stays uncompiled.
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", str(VENV / "lib"), str(ROOT / "src")],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.execv(python, [python, "-m", "benchmarks.peers.run", *sys.argv[1:]])


# -- Redis helpers (harness side) -------------------------------------------------------------


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


SCRIPT_COMMANDS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}


def command_calls(client: Any) -> tuple[int, int]:
    """Commands the server has run, and how many of them were script calls.

    `INFO commandstats` counts every command a Lua script or function runs as well as the
    script call itself, and each command inside MULTI/EXEC: work done by the server, not
    round trips.
    """
    stats = client.info("commandstats")
    total = sum(int(v["calls"]) for v in stats.values())
    scripts = sum(
        int(v["calls"]) for k, v in stats.items() if k.removeprefix("cmdstat_") in SCRIPT_COMMANDS
    )
    return total, scripts


def commands_since(client: Any, before: tuple[int, int], jobs: int) -> tuple[float, float]:
    """Commands and script calls per job since `before`, less the harness's own INFO call."""
    total, scripts = command_calls(client)
    return (total - before[0] - 1) / jobs, (scripts - before[1]) / jobs


def background_rate(client: Any, seconds: float = 1.0) -> float:
    """Commands per second other clients send while the harness is idle."""
    before = command_calls(client)[0]
    time.sleep(seconds)
    return max(0, command_calls(client)[0] - before - 1) / seconds


# -- worker processes -------------------------------------------------------------------------


def _psutil() -> Any:
    # Imported late: the harness starts in the project's venv, which has no psutil, and
    # re-runs itself in the peers' venv.
    import psutil  # type: ignore[import-untyped]  # no stubs in the peers' venv

    return psutil


@dataclass
class WorkerSet:
    """The worker commands of one library, started together, recording into one file."""

    procs: list[subprocess.Popen[bytes]]
    record: Path
    log: Path
    reader: Any
    baseline: dict[int, float] = field(default_factory=dict)

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def _tree(self) -> list[Any]:
        psutil = _psutil()

        out = []
        for p in self.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                top = psutil.Process(p.pid)
                out.append(top)
                out.extend(top.children(recursive=True))
        return out

    def cpu(self) -> dict[int, float]:
        """CPU seconds per process: its own plus its reaped children's (RQ forks per job)."""
        psutil = _psutil()

        out = {}
        for proc in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system + t.children_user + t.children_system
        return out

    def stop(self) -> None:
        psutil = _psutil()

        tree = self._tree()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        for p in self.procs:
            p.wait()
        self.reader.close()

    def log_tail(self, lines: int = 6) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " / ".join(line.strip() for line in text[-lines:])


def start_workers(peer: Any, tmp: Path, tag: str) -> WorkerSet:
    from benchmarks.peers import recorder

    record = tmp / f"{tag}.rec"
    recorder.create(record)
    log = tmp / f"{tag}.log"
    env = {
        **os.environ,
        recorder.ENV: str(record),
        "PEERS_RECORD_INHERIT": "1" if peer.inherit_record else "0",
        "PYTHONPATH": str(ROOT),
    }
    out = log.open("ab")
    procs = [
        subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        for argv in peer.worker_commands()
    ]
    out.close()
    return WorkerSet(procs, record, log, recorder.Reader(record))


async def wait_done(ws: WorkerSet, total: int, timeout: float, track_cpu: bool = False) -> None:
    """Poll shared memory (no syscall, no Redis) until `total` jobs have run.

    With `track_cpu`, each process's CPU baseline is taken when it takes its recorder slot
    (its first job, or RQ's worker start), and the rest of the process tree's at the first
    job anywhere, so interpreter start-up and imports are not counted as work.
    """
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    slots = 0
    first = False
    while True:
        done = ws.reader.done()
        if track_cpu:
            pids = ws.reader.pids()
            if len(pids) > slots:
                now_cpu = ws.cpu()
                for pid in pids[slots:]:
                    ws.baseline.setdefault(pid, now_cpu.get(pid, 0.0))
                slots = len(pids)
            if done and not first:
                first = True
                for pid, value in ws.cpu().items():
                    ws.baseline.setdefault(pid, value)
        if done >= total:
            return
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(
                f"{done:,} of {total:,} jobs done after {timeout:.0f} s; {ws.log_tail()}"
            )
        if now - checked > 0.2:
            checked = now
            if not ws.alive():
                raise RuntimeError(f"workers exited; {done:,} of {total:,} done; {ws.log_tail()}")
        await asyncio.sleep(0.001 if done == 0 else 0.003)


# -- producers --------------------------------------------------------------------------------


async def one_by_one(peer: Any, kind: Kind, n: int, rate: float | None = None) -> float:
    """Enqueue `n` jobs with one call each; returns the seconds it took."""
    from benchmarks.peers.common import AsyncPeer

    start = time.perf_counter()
    if isinstance(peer, AsyncPeer):
        for i in range(n):
            if rate is not None:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await peer.enqueue(kind, time.time())
    else:
        for i in range(n):
            if rate is not None:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    # A sync library's producer blocks its thread; so does its pacing.
                    time.sleep(delay)  # noqa: ASYNC251
            peer.enqueue(kind, time.time())
    return time.perf_counter() - start


def blocking_one_by_one(enqueue: Callable[[Kind, float], object], n: int) -> float:
    """``one_by_one`` through an async library's blocking call, on a thread with no loop
    (where a sync endpoint or a script would make it)."""
    start = time.perf_counter()
    for _ in range(n):
        enqueue("noop", time.time())
    return time.perf_counter() - start


async def batched(peer: Any, kind: Kind, n: int, size: int) -> float:
    """Enqueue `n` jobs through the library's batch API, `size` a call."""
    from benchmarks.peers.common import AsyncPeer

    start = time.perf_counter()
    for first in range(0, n, size):
        ts = [time.time()] * min(size, n - first)
        if isinstance(peer, AsyncPeer):
            await peer.enqueue_batch(kind, ts)
        else:
            peer.enqueue_batch(kind, ts)
    return time.perf_counter() - start


async def call(peer: Any, method: str) -> None:
    result = getattr(peer, method)()
    if asyncio.iscoroutine(result):
        await result


# -- one library ------------------------------------------------------------------------------


@dataclass
class Sizes:
    jobs: int
    latency: int
    io: int
    wait: float


async def bench_library(name: str, url: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    from benchmarks.peers.common import SLEEP

    module = importlib.import_module(f"benchmarks.peers.lib_{name}")
    peer = module.Adapter()
    r: dict[str, Any] = {"version": peer.version()}
    client = _redis(url)
    n = min(sizes.jobs, peer.max_jobs or sizes.jobs)
    io = min(sizes.io, peer.max_jobs or sizes.io)
    r["jobs"], r["io_jobs"] = n, io

    async def flush() -> None:
        client.flushdb()
        await call(peer, "reset")

    await flush()
    await call(peer, "open")

    # 1. one by one, no workers.
    before = command_calls(client)
    seconds = await one_by_one(peer, "noop", n)
    r["enqueue_cmds"], r["enqueue_scripts"] = commands_since(client, before, n)
    r["one_by_one"] = n / seconds
    blocking = getattr(peer, "enqueue_blocking", None)
    if blocking is not None:  # an async library with a blocking call as well: both figures
        await flush()
        r["one_by_one_blocking"] = n / await asyncio.to_thread(blocking_one_by_one, blocking, n)
    await flush()

    # 2. batched, no workers: the backlog for the drain.
    r["batched"] = n / await batched(peer, "noop", n, BATCH)

    # 3. drain that backlog with fresh workers.
    before = command_calls(client)
    ws = start_workers(peer, tmp, "drain")
    try:
        await wait_done(ws, n, sizes.wait, track_cpu=True)
        cpu1 = ws.cpu()
        r["drain_cmds"], r["drain_scripts"] = commands_since(client, before, n)
        snap = ws.reader.snapshot()
        r["drain"] = n / (snap.last - snap.first)
        r["cpu_us"] = sum(v - ws.baseline.get(pid, 0.0) for pid, v in cpu1.items()) / n * 1e6

        # 4. online: the same workers, the producer enqueues in batches of 100.
        ws.reader.reset()
        start = time.time()
        await batched(peer, "noop", n, ONLINE_BATCH)
        await wait_done(ws, n, sizes.wait)
        r["online"] = n / (ws.reader.snapshot().last - start)

        # 5. latency at 200 jobs/s.
        ws.reader.reset()
        await one_by_one(peer, "noop", sizes.latency, LATENCY_RATE)
        await wait_done(ws, sizes.latency, sizes.wait)
        lags = sorted(x * 1000 for x in ws.reader.snapshot(lags=True).lags)
        r["p50"] = statistics.median(lags)
        r["p99"] = lags[max(0, int(len(lags) * 0.99) - 1)]
    finally:
        ws.stop()
    await flush()

    # 6. 10 ms sleeps: backlog first, then fresh workers.
    await batched(peer, "sleep", io, BATCH)
    ws = start_workers(peer, tmp, "io")
    try:
        await wait_done(ws, io, sizes.wait)
        snap = ws.reader.snapshot()
        procs = ws.reader.per_process()
    finally:
        ws.stop()
    slots = 64  # 2 x 32 for every library, RQ too (see docs/benchmarks.md)
    ideal = io * SLEEP / slots
    r["io_cold_pct"] = ideal / (snap.last - snap.first) * 100
    # Each process's own rate, from its first start: worker processes started together on
    # two cores begin up to a few hundred ms apart, which the figure above charges to the
    # library as idle slots. A process with under 1 % of the jobs gives no steady rate.
    rates = [n / (last - first) for n, first, last in procs if n >= io / 100 and last > first]
    r["io_pct"] = sum(rates) / (slots / SLEEP) * 100
    await call(peer, "close")
    await flush()
    return r


def child(name: str, url: str, sizes: Sizes, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f"peers-{name}-") as d:
        try:
            result = asyncio.run(bench_library(name, url, sizes, Path(d)))
        except BaseException as exc:  # every failure becomes the row's text
            result = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        out.write_text(json.dumps(result))


# -- the table --------------------------------------------------------------------------------


def _fmt(r: dict[str, Any], key: str, spec: str) -> str:
    return spec.format(r[key]) if key in r else "—"


def table(
    results: dict[str, dict[str, Any]], meta: dict[str, Any], counted: bool, jobs: int
) -> str:
    cols = [
        "library",
        "enqueue one by one (jobs/s)",
        "enqueue batched (jobs/s)",
        "drain (jobs/s)",
        "online (jobs/s)",
        "enqueue→start p50 / p99 (ms)",
        "10 ms sleeps, % of ideal: per process / from the first start",
        "worker CPU per job (µs)",
        "Redis commands per job (enqueue + drain)",
        "of which script calls",
        "delivery and results (defaults)",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in results.items():
        label = f"{name} {r.get('version', '')}".strip()
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} |" + " |" * (len(cols) - 2))
            continue
        cmds = scripts = "n/a"
        if counted and "drain_cmds" in r:
            cmds = f"{r['enqueue_cmds']:.1f} + {r['drain_cmds']:.1f}"
            scripts = f"{r['enqueue_scripts']:.1f} + {r['drain_scripts']:.1f}"
        if r.get("jobs", jobs) != jobs:
            label += f" ({r['jobs']:,} jobs)"
        lat = f"{r['p50']:.2f} / {r['p99']:.2f}" if "p99" in r else "—"
        one = _fmt(r, "one_by_one", "{:,.0f}")
        if "one_by_one_blocking" in r:
            one = f"{r['one_by_one_blocking']:,.0f} blocking / {one} awaited"
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    one,
                    _fmt(r, "batched", "{:,.0f}"),
                    _fmt(r, "drain", "{:,.0f}"),
                    _fmt(r, "online", "{:,.0f}"),
                    lat,
                    _fmt(r, "io_pct", "{:.0f} %") + " / " + _fmt(r, "io_cold_pct", "{:.0f} %"),
                    _fmt(r, "cpu_us", "{:,.0f}"),
                    cmds,
                    scripts,
                    meta[name]["delivery"],
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]]) -> list[str]:
    """Where offload stands against its targets, as ratios within this run."""
    me = results.get("offload", {})
    peers = {k: v for k, v in results.items() if k != "offload" and "error" not in v}
    if "drain" not in me or not peers:
        return []
    out = []

    def best(key: str) -> tuple[str, float]:
        name = max((k for k in peers if key in peers[k]), key=lambda k: peers[k][key])
        return name, peers[name][key]

    name, value = best("drain")
    out.append(
        f"- drain: {me['drain'] / value:.2f}× the fastest peer ({name}, {value:,.0f}/s); "
        "target ≥ 2×"
    )
    name, value = best("one_by_one")
    mine = max(me["one_by_one"], me.get("one_by_one_blocking", 0.0))
    out.append(
        f"- enqueue one by one: {mine / value:.2f}× the fastest peer ({name}, "
        f"{value:,.0f}/s); target ≥ 1×"
    )
    if "one_by_one_blocking" in me:
        out.append(f"  - awaited: {me['one_by_one'] / value:.2f}×")
    out.append(f"- enqueue→start p99: {me['p99']:.2f} ms; target ≤ 1 ms")
    out.append(
        f"- 10 ms sleeps: {me['io_pct']:.0f} % of ideal per process "
        f"({me['io_cold_pct']:.0f} % from the first start anywhere); target ≥ 95 %"
    )
    return out


@contextlib.contextmanager
def own_server() -> Iterator[str]:
    """A private redis-server on a free loopback port, for command counts no one else touches."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server not found; drop --own-server to use the running Redis.")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/15"
    try:
        for _ in range(100):
            try:
                _redis(url).ping()
                break
            except Exception:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs for the rate figures")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 200 latency, 1,000 I/O")
    parser.add_argument("--only", default="", help="comma-separated libraries to run")
    parser.add_argument("--skip", default="", help="comma-separated libraries to leave out")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per library")
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/15", help="Redis URL with a dedicated DB"
    )
    parser.add_argument(
        "--own-server", action="store_true", help="start a private redis-server for the run"
    )
    parser.add_argument("--flush", action="store_true", help="empty the DB first if it has keys")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every library this many times, taking turns; the table shows medians",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    ns = parser.parse_args()

    if ns.quick:
        sizes = Sizes(jobs=2_000, latency=200, io=1_000, wait=300)
    else:
        sizes = Sizes(jobs=ns.jobs, latency=1_000, io=5_000, wait=600)
    if ns.child:
        child(ns.child, os.environ["PEERS_REDIS_URL"], sizes, Path(ns.out))
        return

    ensure_venv()
    names = [n for n in ns.only.split(",") if n] or LIBRARIES
    unknown = sorted(set(names + [n for n in ns.skip.split(",") if n]) - set(LIBRARIES))
    if unknown:
        sys.exit(f"unknown library {', '.join(unknown)}; choose from {', '.join(LIBRARIES)}")
    names = [n for n in names if n not in set(ns.skip.split(","))]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(own_server()) if ns.own_server else ns.redis
        run_all(names, url, sizes, ns)


def run_child(
    name: str, url: str, ns: argparse.Namespace, timeout: float, client: Any
) -> dict[str, Any]:
    """One library's whole workload in a child process (and its process group)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PEERS_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "benchmarks.peers.run", "--child", name, "--out", out.name]
        if ns.quick:
            argv.append("--quick")
        else:
            argv += ["--jobs", str(ns.jobs)]
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
            text = Path(out.name).read_text()
            return json.loads(text) if text else {"error": f"exit {proc.returncode}"}
        except subprocess.TimeoutExpired:
            # The child and every worker it started share its process group.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"error": f"no result within {timeout:.0f} s"}
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            client.flushdb()
            raise


def median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds that produced a result (an error if none did)."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    merged = dict(good[0])
    for key, value in good[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in good if key in r)
    if len(good) < len(runs):
        merged["failed_rounds"] = len(runs) - len(good)
    return merged


def run_all(names: list[str], url: str, sizes: Sizes, ns: argparse.Namespace) -> None:
    from urllib.parse import urlsplit

    db = int(urlsplit(url).path.strip("/") or 0)
    if db == 0:
        sys.exit("refusing to use Redis DB 0 (others keep data there): give --redis .../15")
    client = _redis(url)
    try:
        client.ping()
    except Exception as exc:
        sys.exit(f"cannot reach Redis at {url}: {exc}")
    if client.dbsize() and not ns.flush:
        sys.exit(f"Redis DB {db} at {url} holds keys; pass --flush to empty it, or pick another DB")
    client.flushdb()
    busy = background_rate(client)
    meta = {}
    for name in names:
        module = importlib.import_module(f"benchmarks.peers.lib_{name}")
        meta[name] = {
            "delivery": module.Adapter.delivery,
            "settings": module.Adapter.settings,
            "batch": module.Adapter.batch_api,
        }
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    timeout = ns.timeout or (sizes.wait * 2 + 120)
    # Libraries take turns, round after round, so a slow spell on a shared machine lands on
    # several of them rather than on one library's every run.
    for turn in range(ns.rounds):
        for name in names:
            label = name if ns.rounds == 1 else f"{name} (round {turn + 1} of {ns.rounds})"
            print(f"running {label} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            rounds[name].append(run_child(name, url, ns, timeout, client))
            client.flushdb()
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    results = {name: median_result(runs) for name, runs in rounds.items()}
    counted = busy < 5
    print(table(results, meta, counted, sizes.jobs))
    print()
    for line in ratios(results):
        print(line)
    if ns.rounds > 1:
        for turn in range(ns.rounds):
            print(f"\nround {turn + 1}:")
            for line in ratios({name: runs[turn] for name, runs in rounds.items()}):
                print(line)
    if not counted:
        print(
            f"\nRedis commands not counted: other clients sent {busy:,.0f} commands/s to this "
            "server (INFO commandstats is server-wide); use --own-server or a quiet server."
        )
    print()
    for name in names:
        m = meta[name]
        print(f"- {name}: {m['settings']}; batched: {m['batch']}")


if __name__ == "__main__":
    main()
