"""The Redis store's scans: listing jobs newest first across queues, and purging old ones
(and deleting one, which takes the purge's steps).

Both walk sorted sets in bounded batches so that one call never blocks the server for long.
"""

from __future__ import annotations

from offload.records import JobRecord
from offload.stores._common import (
    check_activity,
    encode_cursor,
    id_bounds,
    matches,
    tally_activity,
    upper_id,
)
from offload.stores.base import Activity, JobFilter, Page
from offload.stores.redis.connection import RedisConnection
from offload.stores.redis.layout import NUL, record, record_from

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
                        [keys.done, keys.all, keys.counts, keys.failed, keys.cancelled],
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
                "purge_drop",
                [keys.done, keys.all, keys.counts, keys.failed, keys.cancelled],
                [keys.job, _NO_CUTOFF, job.id],
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
    until no unexamined id can beat the matches already found. Time bounds are id bounds
    (see ``JobFilter``), so they narrow each queue's range of ``all`` itself."""
    below = upper_id(filter, cursor)
    low = id_bounds(filter)[0]
    if filter.key is not None:
        return await _list_by_key(conn, filter, limit, below)
    wanted = limit + 1
    scan = max(1000, 10 * wanted)
    states = [s.value for s in filter.states]
    tasks = list(filter.tasks)
    tail = [wanted, len(states), *states, len(tasks), *tasks]
    lower = "-" if low is None else f"[{low}"
    layout, scripts = conn.layout, conn.scripts
    async with conn.guard("listing jobs"):
        names = (
            list(dict.fromkeys(filter.queues))
            if filter.queues
            else sorted(await conn.refresh_known(0.0))
        )
        bounds = dict.fromkeys(names, "+" if below is None else f"({below}")
        # Per queue: every id at or above its frontier has been examined ("" = all).
        frontier: dict[str, str] = {}
        matches: list[JobRecord] = []
        open_queues = names
        while open_queues:
            commands = [
                scripts.evalsha(
                    "list",
                    [layout.queue(q).all],
                    [layout.queue(q).job, bounds[q], lower, scan, *tail],
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
    return _page(matches, limit)


async def _list_by_key(
    conn: RedisConnection, filter: JobFilter, limit: int, below: str | None
) -> Page:
    """One read of each task's idempotency key names its job (the key is unique per task),
    so no queue is scanned; with no tasks given, those of the registry of keyed tasks."""
    assert filter.key is not None
    layout = conn.layout
    async with conn.guard("listing jobs"):
        if filter.tasks:
            tasks = list(filter.tasks)
        else:
            [members] = await conn.run([("SMEMBERS", layout.keyed_tasks_key)])
            tasks = sorted(members)
        holders = (
            await conn.run([("GET", layout.idempotency_key(t, filter.key)) for t in tasks])
            if tasks
            else []
        )
        found = [h.split(NUL, 1) for h in holders if h and NUL in h]
        rows = (
            await conn.run([("HGETALL", layout.queue(q).job + job_id) for q, job_id in found])
            if found
            else []
        )
    jobs = [record_from(fields) for fields in rows if fields]
    return _page([j for j in jobs if matches(j, filter) and (below is None or j.id < below)], limit)


def _page(jobs: list[JobRecord], limit: int) -> Page:
    jobs.sort(key=lambda r: r.id, reverse=True)
    page = jobs[:limit]
    more = len(jobs) > limit
    return Page(page, encode_cursor(page[-1].id) if more and page else None)


# Buckets the activity script counts per call, at most.
ACTIVITY_BATCH = 500
# The order of each bucket's counts in the script's reply.
_STATES_ORDER = ("succeeded", "failed", "cancelled")


async def read_activity(conn: RedisConnection, since: float, bucket: float) -> list[Activity]:
    """Every queue's finished jobs from ``since`` on, per bucket and state: a few ZCOUNTs
    per bucket that holds any (see activity.lua), whatever the number of jobs."""
    check_activity(since, bucket)
    layout = conn.layout
    rows: list[tuple[float, str, int]] = []
    async with conn.guard("reading activity"):
        names = sorted(await conn.refresh_known(0.0))
        resume = dict.fromkeys(names, repr(float(since)))
        while resume:
            commands = [
                conn.scripts.evalsha(
                    "activity",
                    [layout.queue(q).done, layout.queue(q).failed, layout.queue(q).cancelled],
                    [start, bucket, ACTIVITY_BATCH],
                )
                for q, start in resume.items()
            ]
            replies = await conn.run(commands)
            for queue, reply in zip(list(resume), replies, strict=True):
                for i in range(2, len(reply), 4):
                    number = float(reply[i])
                    for state, n in zip(_STATES_ORDER, reply[i + 1 : i + 4], strict=True):
                        rows.append((number, state, int(n)))
                if reply[0] == "1":
                    resume[queue] = reply[1]
                else:
                    del resume[queue]
    return tally_activity(rows, bucket)
