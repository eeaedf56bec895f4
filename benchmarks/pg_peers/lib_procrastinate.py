"""procrastinate on PostgreSQL: 2 x ``procrastinate --app ... worker --concurrency 32``.

Imported by the harness (``benchmarks.postgres_bench``, in ``benchmarks/pg_peers/.venv``) and
by each worker process, so the task has the same name on both sides. The schema is the
harness's fresh one for this run, reached through libpq's ``search_path``: procrastinate's
SQL names its tables, types and functions without a schema, so they are created in, and
found in, that schema alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

import procrastinate

from benchmarks.peers import recorder
from benchmarks.peers.common import CONCURRENCY, WORKERS, AsyncPeer, Kind, bin_argv

DSN_ENV = "PG_BENCH_DSN"
SCHEMA_ENV = "PG_BENCH_PROCRASTINATE_SCHEMA"
DSN = os.environ.get(DSN_ENV, "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = os.environ.get(SCHEMA_ENV, "bench_procrastinate")

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=DSN, kwargs={"options": f"-c search_path={SCHEMA}"}
    )
)


@app.task(name="noop")
async def noop(t: float) -> None:
    recorder.hit(t)


class Adapter(AsyncPeer):
    name = "procrastinate"
    package = "procrastinate"
    settings: ClassVar[str] = (
        f"{WORKERS} x `procrastinate --app benchmarks.pg_peers.lib_procrastinate.app worker "
        f"--concurrency {CONCURRENCY}`; defaults otherwise (LISTEN/NOTIFY on, a poll every "
        "5 s, a pool of 4 connections a process, jobs kept after they finish, no retries, "
        "log level INFO: two lines per job)"
    )
    batch_api = "`task.batch_defer_async(*kwargs)`, 1,000 a call"
    # Stalled jobs are found only by a call the user schedules (`get_stalled_jobs`, then a
    # retry): a job whose worker died stays `doing` until then. Results are not stored.
    delivery = "at-most-once unless stalled jobs are retried by hand; no results kept"
    per_job: ClassVar[str] = (
        "a trigger NOTIFYs on each insert; each worker LISTENs (and polls every 5 s) and "
        "fetches one job per statement (`procrastinate_fetch_job_v2`), then finishes it in "
        "another (`procrastinate_finish_job_v1`)"
    )

    def worker_commands(self) -> list[list[str]]:
        argv = bin_argv(
            "procrastinate",
            "--app",
            "benchmarks.pg_peers.lib_procrastinate.app",
            "worker",
            "--concurrency",
            str(CONCURRENCY),
        )
        return [argv] * WORKERS

    async def open(self) -> None:
        """Open the producer's pool and lay procrastinate's tables in the (empty) schema."""
        await app.open_async()
        await app.schema_manager.apply_schema_async()

    async def enqueue(self, kind: Kind, t: float) -> None:
        await noop.defer_async(t=t)

    async def enqueue_batch(self, kind: Kind, ts: Sequence[float]) -> None:
        await noop.batch_defer_async(*({"t": t} for t in ts))

    async def close(self) -> None:
        await app.close_async()
