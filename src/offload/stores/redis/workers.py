"""The Redis store's worker registry (``WorkerRegistry``): who is alive, idle workers too.

Two keys under the store's prefix, both with its hash tag so that they share one Cluster
slot: a hash of worker id → the worker's info as JSON, and a sorted set of worker id → when
its entry lapses (server time). Keys carry no Redis expiry of their own: one worker's entry
must lapse while the others' stay, so the sorted set decides, and a read drops what lapsed.

Recording costs two round trips (the server's clock, then one pipelined write) once per
heartbeat tick of each worker, never on a job's path.
"""

from __future__ import annotations

import json
from typing import Any

from offload.stores.base import WorkerInfo, check_worker_ttl
from offload.stores.redis.connection import RedisConnection


def info_key(prefix: str) -> str:
    return f"{{{prefix}}}:workers"


def expiry_key(prefix: str) -> str:
    return f"{{{prefix}}}:workers_until"


def _encode(info: WorkerInfo, seen_at: float) -> str:
    return json.dumps(
        {
            "host": info.host,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "started_at": info.started_at,
            "running": info.running,
            "seen_at": seen_at,
        },
        separators=(",", ":"),
    )


def _decode(worker_id: str, text: str) -> WorkerInfo | None:
    """The entry's info, or ``None`` for one this code cannot read (written by another
    program under the prefix, or a newer offload): left out rather than failing the page."""
    try:
        data: dict[str, Any] = json.loads(text)
        return WorkerInfo(
            worker_id,
            str(data["host"]),
            int(data["pid"]),
            tuple(str(q) for q in data["queues"]),
            int(data["concurrency"]),
            float(data["started_at"]),
            int(data["running"]),
            float(data["seen_at"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


async def record_worker(conn: RedisConnection, info: WorkerInfo, ttl: float) -> None:
    ttl = check_worker_ttl(ttl)
    prefix = conn.layout.prefix
    now = await conn.now()
    async with conn.guard("recording a worker"):
        await conn.run(
            [
                ("HSET", info_key(prefix), info.id, _encode(info, now)),
                ("ZADD", expiry_key(prefix), repr(now + ttl), info.id),
            ]
        )


async def forget_worker(conn: RedisConnection, worker_id: str) -> None:
    prefix = conn.layout.prefix
    async with conn.guard("forgetting a worker"):
        await conn.run(
            [("ZREM", expiry_key(prefix), worker_id), ("HDEL", info_key(prefix), worker_id)]
        )


async def live_workers(conn: RedisConnection) -> list[WorkerInfo]:
    prefix = conn.layout.prefix
    hkey, zkey = info_key(prefix), expiry_key(prefix)
    now = await conn.now()
    async with conn.guard("reading workers"):
        lapsed, alive, entries = await conn.run(
            [
                ("ZRANGEBYSCORE", zkey, "-inf", repr(now)),
                ("ZRANGEBYSCORE", zkey, f"({now!r}", "+inf"),
                ("HGETALL", hkey),
            ]
        )
        if lapsed:
            # Only entries still lapsed when this runs: a worker that recorded itself again
            # meanwhile keeps its new expiry. Its info may go with the HDEL all the same;
            # then it is missing until its next heartbeat, a third of a lease later.
            await conn.run([("ZREMRANGEBYSCORE", zkey, "-inf", repr(now)), ("HDEL", hkey, *lapsed)])
    live = set(alive)
    found = (_decode(w, text) for w, text in entries.items() if w in live)
    return sorted((info for info in found if info is not None), key=lambda info: info.id)
