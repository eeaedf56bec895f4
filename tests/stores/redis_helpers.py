"""Worker and producer processes for the Redis chaos tests, and the checks on what they left.

Run as ``python -c "from tests.stores.redis_helpers import main; main()" <role> ...`` from the
repository root. Every run and every acknowledged enqueue is appended to a file with one
``os.write`` on an ``O_APPEND`` descriptor, so a SIGKILL never loses a line already reported.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from offload import JobContext, Offload, Worker
from offload.errors import StoreUnavailable

ROOT = Path(__file__).resolve().parents[2]
TASK = "chaos.record"
# Short leases so that a killed worker's jobs come back within the test's time budget.
LEASE = 1.5
CONCURRENCY = 16
# Retries enough that repeated kills never exhaust a job; a failed job would read as "lost".
RETRIES = 20
BATCH = 25
JOB_SECONDS = 0.02


def make_app(url: str, runs: Path | None = None) -> Offload:
    app = Offload(url, embedded_worker=False)
    fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if runs is not None else -1
    pid = os.getpid()

    @app.task(name=TASK, retries=RETRIES, backoff=0.05)
    async def record(ctx: JobContext, n: int) -> None:
        os.write(fd, f"{n} {ctx.attempt} {pid} {time.time():.6f}\n".encode())
        # Each job holds its slot for JOB_SECONDS, so the run cannot outpace the kills: 3
        # workers x 16 slots finish at most 2,400 jobs/s, and 20,000 jobs take 8 s or more
        # however fast the machine is, which leaves room for several kills 2 s apart.
        await asyncio.sleep(JOB_SECONDS)

    return app


async def run_worker(url: str, runs: Path) -> None:
    """As ``offload worker`` does: the worker opens the store, waiting while it is down."""
    app = make_app(url, runs)
    try:
        await Worker(app, concurrency=CONCURRENCY, lease=LEASE).run()
    finally:
        await app.close()


async def run_producer(
    url: str, first: int, count: int, acked: Path, retries: Path | None = None
) -> None:
    """Enqueue jobs ``first..first+count`` in small batches; write each acknowledged one.

    A batch that meets StoreUnavailable is sent again: its idempotency keys make that safe.
    With ``retries``, each refusal is written there too (its first number and the reason),
    so that a test can count what an outage refused as well as what was accepted."""
    app = make_app(url)
    task = app.get_task(TASK)
    fd = os.open(acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    refused = None if retries is None else os.open(retries, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    while True:
        try:
            await app.open()
            break
        except StoreUnavailable:
            await asyncio.sleep(0.2)
    for start in range(first, first + count, BATCH):
        numbers = range(start, min(start + BATCH, first + count))
        while True:
            try:
                await app.enqueue_many([task.options(key=f"n{n}").prepare(n) for n in numbers])
            except StoreUnavailable as exc:
                if refused is not None:
                    os.write(refused, f"{start} {str(exc).splitlines()[0]}\n".encode())
                await asyncio.sleep(0.1)
                continue
            break
        os.write(fd, "".join(f"{n}\n" for n in numbers).encode())
    await app.close()


def main() -> None:
    role, url, *rest = sys.argv[1:]
    if role == "worker":
        asyncio.run(run_worker(url, Path(rest[0])))
    else:
        asyncio.run(run_producer(url, int(rest[0]), int(rest[1]), Path(rest[2])))


def spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    code = "from tests.stores.redis_helpers import main; main()"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


@dataclass(frozen=True, slots=True)
class Run:
    n: int
    attempt: int
    pid: int
    at: float


def read_runs(files: Iterable[Path]) -> dict[int, list[Run]]:
    runs: dict[int, list[Run]] = defaultdict(list)
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            n, attempt, pid, at = line.split()
            runs[int(n)].append(Run(int(n), int(attempt), int(pid), float(at)))
    for items in runs.values():
        items.sort(key=lambda r: r.attempt)
    return runs


def read_acked(path: Path) -> set[int]:
    return {int(line) for line in path.read_text().split()} if path.exists() else set()
