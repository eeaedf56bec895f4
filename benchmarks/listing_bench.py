"""The dashboard's reads on a store of 1,000,000 jobs: filtered listings and activity.

Run: ``.venv/bin/python -m benchmarks.listing_bench [--jobs N] [--stores sqlite,redis]``.
Prints one Markdown table per store: p50 and p95 of each read over ``--calls`` calls.

The store is filled by batches of ``store.enqueue`` (as ``jobs.enqueue_many`` sends them):
5 tasks over 4 queues, one job in 10 with an idempotency key, ids minted over the last two
hours (so time windows select what they would on a store that took two hours to fill).
Then 10% of the jobs finish by claim and complete: 97% succeeded, 2% failed, 1% cancelled,
all within the last hour, which is the activity chart's worst case (every finished job is
in its range). Redis runs on 127.0.0.1:6379 under a prefix of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from offload.ids import new_id
from offload.records import JobError, JobState
from offload.stores import ClaimRequest, JobFilter, NewJob, Outcome, OutcomeKind, Store, open_store

REDIS_URL = "redis://127.0.0.1:6379/0"
TASKS = [f"task{i}" for i in range(5)]
QUEUES = [f"q{i}" for i in range(4)]
SPAN = 7200.0
BATCH = 2000


def _id_at(at: float) -> str:
    """A UUIDv7 of the millisecond ``at`` (the tail from a fresh id, for its randomness)."""
    h = f"{round(at * 1000):012x}"
    return f"{h[:8]}-{h[8:]}-{new_id()[14:]}"


def _jobs(start: int, n: int, total: int, origin: float) -> list[NewJob]:
    out = []
    for i in range(start, start + n):
        out.append(
            NewJob(
                id=_id_at(origin + SPAN * i / total),
                task=TASKS[i % len(TASKS)],
                queue=QUEUES[(i // 7) % len(QUEUES)],
                args="[]",
                kwargs="{}",
                priority=0,
                max_attempts=3,
                key=f"key-{i}" if i % 10 == 0 else None,
            )
        )
    return out


async def _fill(store: Store, total: int) -> float:
    origin = time.time() - SPAN
    started = time.perf_counter()
    for start in range(0, total, BATCH):
        await store.enqueue(_jobs(start, min(BATCH, total - start), total, origin))
    filled = time.perf_counter() - started
    err = JobError("RuntimeError", "boom")
    finished = 0
    while finished < total // 10:
        claimed = await store.claim(ClaimRequest("bench", 300.0, 1000))
        outcomes = []
        for job in claimed:
            finished += 1
            if finished % 100 == 0:
                outcomes.append(Outcome(job.id, "bench", 1, OutcomeKind.CANCELLED))
            elif finished % 50 == 0:
                outcomes.append(Outcome(job.id, "bench", 1, OutcomeKind.FAILED, error=err))
            else:
                outcomes.append(Outcome(job.id, "bench", 1, OutcomeKind.SUCCEEDED, "null"))
        await store.complete(outcomes)
    print(
        f"filled {total:,} jobs in {filled:.1f} s, finished {finished:,} in "
        f"{time.perf_counter() - started - filled:.1f} s"
    )
    return origin


async def _time(call: Callable[[], Awaitable[Any]], calls: int) -> tuple[float, float, Any]:
    result = await call()  # warm: scripts loaded, pages cached
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], result


async def _measure(store: Store, origin: float, total: int, calls: int) -> list[str]:
    mid = origin + SPAN / 2
    second = await store.list(JobFilter(), 50)
    assert second.next_cursor is not None
    cursor = second.next_cursor
    key = f"key-{(total // 2) // 10 * 10}"
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("list, no filter", lambda: store.list(JobFilter(), 50)),
        ("list, no filter, page 2", lambda: store.list(JobFilter(), 50, cursor)),
        ("list, state queued", lambda: store.list(JobFilter(states=(JobState.QUEUED,)), 50)),
        ("list, one task", lambda: store.list(JobFilter(tasks=(TASKS[3],)), 50)),
        ("list, one queue", lambda: store.list(JobFilter(queues=(QUEUES[1],)), 50)),
        (
            "list, state failed (1 in 500 jobs)",
            lambda: store.list(JobFilter(states=(JobState.FAILED,)), 50),
        ),
        (
            "list, last 10 min",
            lambda: store.list(JobFilter(enqueued_after=time.time() - 600), 50),
        ),
        (
            "list, a 1 min window 1 h ago",
            lambda: store.list(JobFilter(enqueued_after=mid, enqueued_before=mid + 60), 50),
        ),
        (
            "list, 1 min window + task + queue",
            lambda: store.list(
                JobFilter(
                    tasks=(TASKS[1],),
                    queues=(QUEUES[2],),
                    enqueued_after=mid,
                    enqueued_before=mid + 60,
                ),
                50,
            ),
        ),
        (
            "list, failed in the first 30 min",
            lambda: store.list(
                JobFilter(states=(JobState.FAILED,), enqueued_before=origin + 1800), 50
            ),
        ),
        ("list, key (any task)", lambda: store.list(JobFilter(key=key), 50)),
        ("list, key + tasks", lambda: store.list(JobFilter(key=key, tasks=tuple(TASKS)), 50)),
        ("activity(now - 3600, 60)", lambda: store.activity(time.time() - 3600, 60)),
    ]
    rows = ["| read | p50 ms | p95 ms | jobs |", "|---|---:|---:|---:|"]
    for name, call in cases:
        p50, p95, result = await _time(call, calls)
        n = (
            len(result.jobs)
            if hasattr(result, "jobs")
            else sum(a.succeeded + a.failed + a.cancelled for a in result)
        )
        rows.append(f"| {name} | {p50:.1f} | {p95:.1f} | {n:,} |")
    return rows


async def _drop_redis(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"*{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


async def bench(kind: str, total: int, calls: int, tmp: Path) -> list[str]:
    prefix = f"bench-listing-{uuid.uuid4().hex[:8]}"
    url = {"sqlite": f"sqlite:///{tmp / 'listing.db'}", "redis": f"{REDIS_URL}?prefix={prefix}"}[
        kind
    ]
    store = open_store(url)
    await store.open()
    try:
        origin = await _fill(store, total)
        return [f"### {kind}, {total:,} jobs", "", *await _measure(store, origin, total, calls)]
    finally:
        await store.close()
        if kind == "redis":
            await _drop_redis(prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            print("\n".join(asyncio.run(bench(kind, args.jobs, args.calls, Path(tmp)))))
            print()


if __name__ == "__main__":
    main()
