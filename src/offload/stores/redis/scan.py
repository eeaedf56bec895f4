"""The Redis store's scans: listing jobs newest first across queues, and purging old ones
(and deleting one, which takes the purge's steps).

Both walk sorted sets in bounded batches so that one call never blocks the server for long.
"""

from __future__ import annotations

from offload.records import JobRecord
from offload.stores._common import decode_cursor, encode_cursor
from offload.stores.base import JobFilter, Page
from offload.stores.redis.connection import RedisConnection
from offload.stores.redis.layout import NUL, record

# Finished jobs a purge step handles per script call.
PURGE_BATCH = 500
# purge_drop's cut-off for one job deleted by hand: later than any finished_at.
_NO_CUTOFF = "1e300"


async def purge_done(conn: RedisConnection, older_than: float) -> int:
    """Delete finished jobs older than ``older_than`` in batches, releasing their keys first."""
    layout, scripts = conn.layout, conn.scripts
    total = 0
    async with conn.guard("purge"):
        names = sorted(await conn.refresh_known(0.0))
    for queue in names:
        keys = layout.queue(queue)
        while True:
            async with conn.guard("purge"):
                flat = await conn.call(
                    "purge_scan", [keys.done], [keys.job, older_than, PURGE_BATCH]
                )
                if not flat:
                    break
                ids = flat[0::3]
                # Keys go first: a new job may take a freed key at once, while the old
                # job (still present for a moment) holds no key any more.
                releases = [
                    scripts.evalsha(
                        "release_key",
                        [layout.idempotency_key(task, key)],
                        [f"{queue}{NUL}{job_id}"],
                    )
                    for job_id, task, key in zip(ids, flat[1::3], flat[2::3], strict=True)
                    if key
                ]
                if releases:
                    await conn.run(releases)
                total += int(
                    await conn.call(
                        "purge_drop",
                        [keys.done, keys.all, keys.counts],
                        [keys.job, older_than, *ids],
                    )
                )
            if len(ids) < PURGE_BATCH:
                break
    return total


async def delete_done(conn: RedisConnection, job: JobRecord) -> bool:
    """Delete one finished job as purge does (its key first, then the job, by purge_drop
    with no cut-off), so a new job may take the key at once. False when the job is no
    longer finished (retried meanwhile) or no longer there."""
    keys = conn.layout.queue(job.queue)
    holder = [f"{job.queue}{NUL}{job.id}"]
    key = None if job.key is None else conn.layout.idempotency_key(job.task, job.key)
    async with conn.guard("deleting a job"):
        if key is not None:
            await conn.call("release_key", [key], holder)
        dropped = int(
            await conn.call(
                "purge_drop", [keys.done, keys.all, keys.counts], [keys.job, _NO_CUTOFF, job.id]
            )
        )
        if not dropped and key is not None:
            # Retried between the read and the drop: it keeps its key, unless a new job
            # took the key in that instant (then, as after a purge, the key is the new one's).
            await conn.call("reserve", [key], holder)
    return dropped == 1


async def list_jobs(
    conn: RedisConnection, filter: JobFilter, limit: int, cursor: str | None = None
) -> Page:
    """Newest first across queues: each queue is scanned downwards from its own frontier
    until no unexamined id can beat the matches already found."""
    after = decode_cursor(cursor) if cursor else None
    wanted = limit + 1
    scan = max(1000, 10 * wanted)
    states = [s.value for s in filter.states]
    tasks = list(filter.tasks)
    tail = [wanted, len(states), *states, len(tasks), *tasks]
    layout, scripts = conn.layout, conn.scripts
    async with conn.guard("listing jobs"):
        names = (
            list(dict.fromkeys(filter.queues))
            if filter.queues
            else sorted(await conn.refresh_known(0.0))
        )
        bounds = dict.fromkeys(names, "+" if after is None else f"({after}")
        # Per queue: every id at or above its frontier has been examined ("" = all).
        frontier: dict[str, str] = {}
        matches: list[JobRecord] = []
        open_queues = names
        while open_queues:
            commands = [
                scripts.evalsha(
                    "list",
                    [layout.queue(q).all],
                    [layout.queue(q).job, bounds[q], scan, *tail],
                )
                for q in open_queues
            ]
            for queue, reply in zip(open_queues, await conn.run(commands), strict=True):
                matches.extend(record(flat) for flat in reply[2:])
                frontier[queue] = "" if reply[0] == "1" else reply[1]
                bounds[queue] = f"({reply[1]}"
            open_queues = [q for q in names if frontier[q]]
            # No unexamined id anywhere is above the highest open frontier.
            floor = max((frontier[q] for q in open_queues), default="")
            if sum(1 for m in matches if m.id >= floor) >= wanted:
                break
    matches.sort(key=lambda r: r.id, reverse=True)
    page = matches[:limit]
    more = len(matches) > limit
    return Page(page, encode_cursor(page[-1].id) if more and page else None)
