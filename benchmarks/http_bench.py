"""``POST /register`` under load: FastAPI's BackgroundTasks, offload, Celery, the service.

Run: ``.venv/bin/python -m benchmarks.http_bench`` (``--duration``, ``--connections``,
``--only a,b``, ``--files N``, ``--no-files``; see ``--help``). Needs wrk (``apt-get install
wrk``), Redis on 127.0.0.1:6379 and, for the Celery rows, ``benchmarks/peers/.venv`` (built
by ``scripts/bench-peers``) with FastAPI and uvicorn added. Prints Markdown tables.

Each set-up is one uvicorn process (``--no-access-log``) on the loopback, driven by one wrk
thread over 32 connections for 15 s after a 3 s warm-up, every request with an email of its
own (a Lua counter), so that the reference service, which answers 409 to an email it has
seen, registers every one. For the durable set-ups the jobs in the store are counted after
the run and compared with the 2xx answers wrk saw: a job may exist for a request whose answer
wrk stopped waiting for at the end (at most one per connection), never the reverse. Last, the
service takes 1,000 small CSV uploads from 8 concurrent clients, and the harness waits until
its embedded worker has cleaned them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from offload import Offload
from offload.records import JobState
from offload.stores import JobFilter

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / "benchmarks" / "peers" / ".venv" / "bin" / "python"
REDIS = "redis://127.0.0.1:6379/0"
MARK = "HTTPBENCH "
TOKEN = "http-bench-token-0123456789"

# One email a request: the thread's number and a counter, under a prefix the harness gives
# per wrk run (so that the warm-up's emails are not sent again). done() prints the figures
# as one JSON line; wrk counts an answer of 400 or more as a status error.
LUA = """
local counter = 0
local prefix = "r"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  if args[1] then prefix = args[1] end
end

function request()
  counter = counter + 1
  local body = string.format('{"email":"%s-%d-%d@example.com","name":"User %d"}',
    prefix, tid, counter, counter)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%.1f,"p99_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    timeouts: int  # answers slower than wrk's 2 s timeout (still counted when they come)
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx


@dataclass
class Target:
    key: str
    label: str
    app: str
    env: dict[str, str] = field(default_factory=dict)
    python: Path = Path(sys.executable)
    path: str = "/register"
    # Jobs (or messages) in the store right now; None where nothing is stored.
    count: Callable[[], Coroutine[Any, Any, int]] | None = None
    # Server output: kept in a file to show when it fails to start, or thrown away.
    quiet: bool = False


@dataclass
class Row:
    target: Target
    load: Load
    stored: int | None


# -- counting what was stored -----------------------------------------------------------------


def offload_count(url: str, task: str | None = None) -> Callable[[], Coroutine[Any, Any, int]]:
    async def count() -> int:
        jobs = Offload(url, embedded_worker=False)
        await jobs.open()
        try:
            if task is None:
                return sum((await jobs.store.counts()).values())
            total, cursor, flt = 0, None, JobFilter(tasks=(task,))
            while True:
                page = await jobs.store.list(flt, 1_000, cursor)
                total += len(page.jobs)
                if page.next_cursor is None:
                    return total
                cursor = page.next_cursor
        finally:
            await jobs.close()

    return count


def celery_count(queue: str) -> Callable[[], Coroutine[Any, Any, int]]:
    """The messages waiting in Celery's queue (no worker takes them)."""

    async def count() -> int:
        client = redis.Redis.from_url(REDIS)
        try:
            keys = [k for k in client.scan_iter(match=f"{queue}*") if client.type(k) == b"list"]
            return sum(int(client.llen(k)) for k in keys)
        finally:
            client.close()

    return count


def drop_keys(pattern: str) -> None:
    client = redis.Redis.from_url(REDIS)
    try:
        for key in client.scan_iter(match=pattern, count=1_000):
            client.delete(key)
    finally:
        client.close()


# -- the server and the load ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(target: Target) -> Iterator[str]:
    """One uvicorn process serving the target; stopped with SIGINT, as Ctrl-C would."""
    port = free_port()
    argv = [str(target.python), "-m", "uvicorn", target.app, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **target.env}
    with tempfile.TemporaryFile("w+") as log:
        out: IO[str] | int = subprocess.DEVNULL if target.quiet else log
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_up(proc, base, log)
            yield base
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_up(proc: subprocess.Popen[bytes], base: str, log: IO[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            sys.exit(f"the server exited with {proc.returncode}:\n{log.read()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base}/health", timeout=1) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    sys.exit(f"the server at {base} did not answer GET /health within 60 s")


def wrk(url: str, script: Path, seconds: int, connections: int, prefix: str) -> Load:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-s", str(script), url, "--", prefix]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        sys.exit(f"wrk printed no figures:\n{done.stdout}\n{done.stderr}")
    f = json.loads(line)
    return Load(
        requests=f["requests"],
        seconds=f["duration_us"] / 1e6,
        non_2xx=f["status"],
        socket_errors=f["connect"] + f["read"] + f["write"],
        timeouts=f["timeout"],
        p50_ms=f["p50_us"] / 1e3,
        p99_ms=f["p99_us"] / 1e3,
    )


def measure(target: Target, script: Path, ns: argparse.Namespace) -> Row:
    print(f"  {target.label} ...", file=sys.stderr, flush=True)
    with server(target) as base:
        url = base + target.path
        wrk(url, script, ns.warmup, ns.connections, f"w{uuid.uuid4().hex[:8]}")
        time.sleep(1)  # the warm-up's last requests, cut off by wrk, finish storing
        before = asyncio.run(target.count()) if target.count else 0
        load = wrk(url, script, ns.duration, ns.connections, f"r{uuid.uuid4().hex[:8]}")
    stored = asyncio.run(target.count()) - before if target.count else None
    return Row(target, load, stored)


# -- the set-ups ------------------------------------------------------------------------------


def targets(tmp: Path, tag: str) -> list[Target]:
    def sqlite(name: str) -> str:
        return f"sqlite:///{tmp / name}"

    def service(name: str, log: str) -> Target:
        data = tmp / name
        data.mkdir()
        store = sqlite(f"{name}/jobs.db")
        env = {"NOTIFY_DATA_DIR": str(data), "OFFLOAD_URL": store, "NOTIFY_API_TOKEN": TOKEN}
        return Target(
            name,
            f"reference service, embedded worker, NOTIFY_LOG={log}",
            "examples.notify.app:app",
            env={**env, "NOTIFY_LOG": log},
            count=offload_count(store, "notify.send_welcome"),
            quiet=log != "off",
        )

    redis_store = f"{REDIS}?prefix=httpbench-{tag}"
    queue = f"http-bench-{tag}"
    celery_env = {"HTTP_BENCH_REDIS": REDIS, "HTTP_BENCH_QUEUE": queue}
    durable = "benchmarks.http_apps.durable:app"
    celery = "benchmarks.http_apps.celery_app:app"
    return [
        Target("plain", "FastAPI `BackgroundTasks` (in memory)", "benchmarks.http_apps.plain:app"),
        Target(
            "sqlite",
            "offload `Background`, SQLite, no worker",
            durable,
            env={"HTTP_BENCH_URL": sqlite("a.db")},
            count=offload_count(sqlite("a.db")),
        ),
        Target(
            "sqlite-worker",
            "offload `Background`, SQLite, embedded worker",
            durable,
            env={"HTTP_BENCH_URL": sqlite("b.db"), "HTTP_BENCH_WORKER": "1"},
            count=offload_count(sqlite("b.db")),
        ),
        Target(
            "redis",
            "offload `Background`, Redis, no worker",
            durable,
            env={"HTTP_BENCH_URL": redis_store},
            count=offload_count(redis_store),
        ),
        Target(
            "celery",
            "Celery `delay()`, Redis, `def` endpoint",
            celery,
            env=celery_env,
            python=PEERS_PYTHON,
            count=celery_count(queue),
        ),
        Target(
            "celery-async",
            "Celery `delay()`, Redis, `async def` endpoint",
            celery,
            env=celery_env,
            python=PEERS_PYTHON,
            path="/register-async",
            count=celery_count(queue),
        ),
        service("service", "off"),
        service("service-json", "json"),
    ]


# -- CSV uploads ------------------------------------------------------------------------------


def small_csv(i: int) -> bytes:
    rows = [f"{n},Customer {i}-{n},{(i * 31 + n) % 997}.{n % 100:02d},2026-12-{1 + n % 28:02d}"
            for n in range(20)]  # fmt: skip
    return ("id,Name,Amount,Date\n" + "\n".join(rows) + "\n").encode()


async def upload_files(base: str, n: int, concurrency: int) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    job_ids: list[str] = []
    refused: Counter[int] = Counter()
    todo = iter(range(n))
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as client:

        async def uploader() -> None:
            for i in todo:
                files = {"file": (f"customers-{i}.csv", small_csv(i), "text/csv")}
                answer = await client.post("/files", files=files)
                if answer.status_code == 202:
                    job_ids.append(answer.json()["job_id"])
                else:
                    refused[answer.status_code] += 1

        start = time.perf_counter()
        await asyncio.gather(*(uploader() for _ in range(concurrency)))
        uploaded = time.perf_counter() - start
        states: dict[str, str] = {}
        gate = asyncio.Semaphore(concurrency)

        async def poll(job_id: str) -> None:
            async with gate:
                answer = await client.get(f"/jobs/{job_id}")
            state = answer.json()["state"] if answer.status_code == 200 else "missing"
            if state not in (JobState.QUEUED, JobState.RUNNING):
                states[job_id] = state

        deadline = time.monotonic() + 600
        while len(states) < len(job_ids) and time.monotonic() < deadline:
            await asyncio.gather(*(poll(j) for j in job_ids if j not in states))
            if len(states) < len(job_ids):
                await asyncio.sleep(0.2)
        finished = time.perf_counter() - start
    return {
        "accepted": len(job_ids),
        "refused": dict(refused),
        "upload_s": uploaded,
        "all_done_s": finished,
        "states": dict(Counter(states.values())),
        "unfinished": len(job_ids) - len(states),
    }


def files_run(tmp: Path, n: int, concurrency: int) -> dict[str, Any]:
    print(f"  {n} CSV uploads ...", file=sys.stderr, flush=True)
    (tmp / "files").mkdir()
    store = f"sqlite:///{tmp / 'files' / 'jobs.db'}"
    target = Target(
        "files",
        "reference service, POST /files",
        "examples.notify.app:app",
        env={
            "NOTIFY_DATA_DIR": str(tmp / "files"),
            "OFFLOAD_URL": store,
            "NOTIFY_API_TOKEN": TOKEN,
            "NOTIFY_LOG": "off",
        },
    )
    with server(target) as base:
        out = asyncio.run(upload_files(base, n, concurrency))
    out["stored"] = asyncio.run(offload_count(store, "notify.clean_file")())
    return out


# -- report -----------------------------------------------------------------------------------


def versions() -> str:
    wrk_line = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    own = ", ".join(f"{p} {metadata.version(p)}" for p in ("fastapi", "uvicorn", "pydantic"))
    line = f"{wrk_line.splitlines()[0].split(' [')[0]}; Python {sys.version.split()[0]}; {own}"
    if PEERS_PYTHON.exists():
        code = (
            "from importlib.metadata import version as v; "
            "print(', '.join(f'{p} {v(p)}' for p in ('celery', 'kombu', 'redis', 'fastapi',"
            " 'uvicorn')))"
        )
        peers = subprocess.run([str(PEERS_PYTHON), "-c", code], capture_output=True, text=True)
        line += f"; peers' venv: {peers.stdout.strip()}"
    client = redis.Redis.from_url(REDIS)
    line += f"; Redis {client.info('server')['redis_version']}"
    client.close()
    return line


def report(rows: list[Row], ns: argparse.Namespace) -> None:
    base = next((r.load.rate for r in rows if r.target.key == "plain"), None)
    print(f"wrk -t1 -c{ns.connections} -d{ns.duration}s --latency, after a {ns.warmup} s warm-up\n")
    print(
        "| set-up | req/s | p50 | p99 | % of BackgroundTasks | socket errors / timeouts"
        " / non-2xx | stored / 2xx |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        share = f"{100 * r.load.rate / base:.0f} %" if base else "—"
        stored = "—" if r.stored is None else f"{r.stored:,} / {r.load.ok:,}"
        print(
            f"| {r.target.label} | {r.load.rate:,.0f} | {r.load.p50_ms:.1f} ms "
            f"| {r.load.p99_ms:.1f} ms | {share} "
            f"| {r.load.socket_errors} / {r.load.timeouts} / {r.load.non_2xx} | {stored} |"
        )
    celery = max((r for r in rows if r.target.key.startswith("celery")), default=None,
                 key=lambda r: r.load.rate)  # fmt: skip
    if celery is not None:
        print(f"\nCelery's faster endpoint: {celery.target.label}, {celery.load.rate:,.0f} req/s")
        for r in rows:
            if r.target.count is not None and not r.target.key.startswith("celery"):
                print(f"- {r.target.label}: {r.load.rate / celery.load.rate:.2f} × Celery")  # noqa: RUF001 (as in the docs)
    for r in rows:
        if r.stored is not None and not r.load.ok <= r.stored <= r.load.ok + ns.connections:
            print(f"\n**{r.target.label}: {r.stored} stored for {r.load.ok} 2xx answers**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of load a set-up")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up a set-up")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", default="", help="set-ups by key, comma-separated")
    parser.add_argument("--files", type=int, default=1_000, help="CSV uploads at the end")
    parser.add_argument("--no-files", action="store_true", help="skip the CSV uploads")
    ns = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: install it (`apt-get install wrk`, `brew install wrk`)")
    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
        tag = uuid.uuid4().hex[:12]
        chosen = targets(Path(tmp), tag)
        keys = [k for k in ns.only.split(",") if k]
        unknown = set(keys) - {t.key for t in chosen}
        if unknown:
            known = ", ".join(t.key for t in chosen)
            sys.exit(f"--only: unknown set-up {', '.join(sorted(unknown))}; choose from {known}")
        chosen = [t for t in chosen if not keys or t.key in keys]
        if any(t.python == PEERS_PYTHON for t in chosen) and not PEERS_PYTHON.exists():
            sys.exit(
                "benchmarks/peers/.venv is missing: build it with `scripts/bench-peers --quick"
                " --only celery`, then `uv pip install --python benchmarks/peers/.venv/bin/"
                "python fastapi uvicorn email-validator`, or leave out the Celery set-ups"
            )
        script = Path(tmp) / "register.lua"
        script.write_text(LUA)
        print(versions(), file=sys.stderr)
        try:
            rows = [measure(t, script, ns) for t in chosen]
            files = None if ns.no_files else files_run(Path(tmp), ns.files, 8)
        finally:
            drop_keys(f"*httpbench-{tag}*")
            drop_keys(f"*http-bench-{tag}*")
    print(versions() + "\n")
    report(rows, ns)
    if files is not None:
        print(f"\n{ns.files} CSV uploads, 8 concurrent clients: {json.dumps(files)}")


if __name__ == "__main__":
    main()
