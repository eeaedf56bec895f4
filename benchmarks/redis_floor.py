"""The floors under offload's Redis figures: the same workloads as bare Redis commands.

Run: ``.venv/bin/python -m benchmarks.redis_floor [--redis redis://127.0.0.1:6379/15]
[--jobs 20000] [--offload]``. Prints one Markdown table. The database must be empty; the
run empties it afterwards (FLUSHDB of that database only).

- awaited single: ``await LPUSH`` one after another through redis-py's asyncio client, one
  small payload each: what a queue that keeps nothing but a list entry pays per call; and
  the same over a bare asyncio stream (hiredis packing and parsing, no client library);
- bulk: ``LPUSH`` of 1,000 payloads a call, one call after another;
- drain: 2 processes, each popping 100 at a time (``BLMPOP``) and acknowledging each batch
  with one ``LPUSH`` of its ids to a done list, until the list is empty: a queue with no
  status, no lease and no result.

With ``--offload``, the same run also measures offload's awaited ``enqueue()`` and
``enqueue_many`` of 1,000 on that database, so the ratios the performance targets name
(awaited single ≥ 75 % of the bare round trip, bulk ≥ 100,000 jobs/s) come from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
import uuid
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
from redis import Redis

QUEUE = "floor:queue"
DONE = "floor:done"
BATCH = 1_000
POP = 100


def _payload(n: int) -> str:
    return json.dumps({"id": str(uuid.uuid4()), "task": "floor.noop", "args": [n]})


async def awaited_single(url: str, jobs: int) -> float:
    client = aioredis.Redis.from_url(url)
    try:
        began = time.perf_counter()
        for n in range(jobs):
            await client.lpush(QUEUE, _payload(n))
        return jobs / (time.perf_counter() - began)
    finally:
        await client.aclose()


async def awaited_single_raw(url: str, jobs: int) -> float:
    """The same over asyncio streams with hiredis's packer and reader and nothing else: no
    client library's connection pool or command layer, the leanest awaited round trip."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 6379)
    parse = hiredis.Reader()
    db = parts.path.strip("/") or "0"
    try:
        writer.write(_pack("SELECT", db))
        await _reply(reader, parse)
        began = time.perf_counter()
        for n in range(jobs):
            writer.write(_pack("LPUSH", QUEUE, _payload(n)))
            await _reply(reader, parse)
        return jobs / (time.perf_counter() - began)
    finally:
        writer.close()
        await writer.wait_closed()


def _pack(*command: str) -> bytes:
    packed: bytes = hiredis.pack_command(cast(Any, command))
    return packed


async def _reply(reader: asyncio.StreamReader, parse: hiredis.Reader) -> object:
    while (reply := parse.gets()) is False:
        parse.feed(await reader.read(65536))
    return reply


async def bulk(url: str, jobs: int) -> float:
    client = aioredis.Redis.from_url(url)
    try:
        began = time.perf_counter()
        for start in range(0, jobs, BATCH):
            await client.lpush(QUEUE, *(_payload(n) for n in range(start, start + BATCH)))
        return jobs / (time.perf_counter() - began)
    finally:
        await client.aclose()


def _drainer(url: str, go: multiprocessing.synchronize.Event) -> None:
    client = Redis.from_url(url)
    go.wait()
    while True:
        popped = client.blmpop(0.2, 1, QUEUE, direction="RIGHT", count=POP)
        if not popped:
            return
        ids = [json.loads(cast(bytes, raw))["id"] for raw in popped[1]]
        client.lpush(DONE, *ids)


def drain(url: str, jobs: int) -> float:
    Redis.from_url(url).delete(QUEUE, DONE)
    asyncio.run(bulk(url, jobs))
    go = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_drainer, args=(url, go)) for _ in range(2)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # both connected and waiting
    began = time.perf_counter()
    go.set()
    client = Redis.from_url(url)
    while client.llen(DONE) < jobs:
        time.sleep(0.001)
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
    return jobs / elapsed


async def offload_figures(url: str, jobs: int) -> dict[str, float]:
    from offload import Offload

    app = Offload(f"{url}?prefix=floor", embedded_worker=False)

    @app.task(name="floor.noop")
    async def noop(n: int) -> None:
        return None

    out: dict[str, float] = {}
    async with app:
        began = time.perf_counter()
        for n in range(jobs):
            await noop.enqueue(n)
        out["offload awaited single"] = jobs / (time.perf_counter() - began)
        began = time.perf_counter()
        for start in range(0, jobs, BATCH):
            await app.enqueue_many([noop.prepare(n) for n in range(start, start + BATCH)])
        out["offload bulk (1,000 a call)"] = jobs / (time.perf_counter() - began)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--offload", action="store_true", help="also offload's enqueues")
    args = parser.parse_args()
    client = Redis.from_url(args.redis)
    if client.dbsize():
        raise SystemExit(f"{args.redis} holds keys: give an empty database")
    try:
        figures = {"bare awaited LPUSH": asyncio.run(awaited_single(args.redis, args.jobs))}
        figures["bare awaited LPUSH, raw asyncio stream"] = asyncio.run(
            awaited_single_raw(args.redis, args.jobs)
        )
        client.delete(QUEUE)
        figures["bare bulk LPUSH (1,000 a call)"] = asyncio.run(bulk(args.redis, args.jobs))
        figures["bare drain (BLMPOP 100 + LPUSH ack, 2 processes)"] = drain(args.redis, args.jobs)
        if args.offload:
            figures |= asyncio.run(offload_figures(args.redis, args.jobs))
    finally:
        client.flushdb()
    print("| figure | jobs/s |")
    print("|---|---:|")
    for name, value in figures.items():
        print(f"| {name} | {value:,.0f} |")
    single = figures.get("offload awaited single")
    if single is not None:
        for floor in ("bare awaited LPUSH", "bare awaited LPUSH, raw asyncio stream"):
            print(f"\noffload's awaited single enqueue: {single / figures[floor]:.0%} of {floor}")


if __name__ == "__main__":
    main()
