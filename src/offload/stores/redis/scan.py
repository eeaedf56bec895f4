"""The Redis store's scans: listing jobs newest first across queues, and purging old ones
(and deleting one, which takes the purge's steps).

Both walk sorted sets in bounded batches so that one call never blocks the server for long.
"""

from __future__ import annotations

import hashlib

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


# The per-queue sets that hold each state's jobs (``QueueKeys`` attributes), and the states
# whose jobs those sets hold: what reading them costs, from the queue's counts hash. The
# done set holds every finished job, so succeeded is read from it with the state checked.
_INDEXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "queued": (("ready", "delayed", "held"), ("queued",)),
    "running": (("running",), ("running",)),
    "succeeded": (("done",), ("succeeded", "failed", "cancelled")),
    "failed": (("failed",), ("failed",)),
    "cancelled": (("cancelled",), ("cancelled",)),
}
# A state's index is read whole (list_index.lua) when it holds at most this many jobs of
# a queue; a larger one is a large share of the store, where walking the ids newest first
# meets its jobs soon. Bounds what one script call reads (about 25 ms at this size).
INDEX_MAX = 50_000


async def list_jobs(
    conn: RedisConnection, filter: JobFilter, limit: int, cursor: str | None = None
) -> Page:
    """Newest first across queues: each lane (a queue's ids, or the indexes of a queue's
    states) is walked downwards from its own frontier until no unexamined id can beat the
    matches already found. Time bounds are id bounds (see ``JobFilter``), so they narrow
    each lane's range itself."""
    below = upper_id(filter, cursor)
    low = id_bounds(filter)[0]
    if filter.key is not None:
        return await _list_by_key(conn, filter, limit, below)
    wanted = limit + 1
    scan = max(1000, 10 * wanted)
    tasks = list(filter.tasks)
    task_tail = [len(tasks), *tasks]
    lower = "-" if low is None else f"[{low}"
    layout, scripts = conn.layout, conn.scripts
    async with conn.guard("listing jobs"):
        names = (
            list(dict.fromkeys(filter.queues))
            if filter.queues
            else sorted(await conn.refresh_known(0.0))
        )
        lanes = await _lanes(conn, names, [s.value for s in filter.states])
        bounds = ["+" if below is None else f"({below}"] * len(lanes)
        # Per lane: every id at or above its frontier has been examined ("" = all).
        frontier = [""] * len(lanes)
        found: dict[str, JobRecord] = {}
        open_lanes = list(range(len(lanes)))
        while open_lanes:
            commands = []
            for i in open_lanes:
                keys = layout.queue(lanes[i][0])
                index, states = lanes[i][1], lanes[i][2]
                head = [keys.job, bounds[i], lower]
                state_tail = [len(states), *states]
                commands.append(
                    scripts.evalsha(
                        "list_index",
                        [getattr(keys, name) for name in index],
                        [*head, wanted, *state_tail, *task_tail],
                    )
                    if index
                    else scripts.evalsha(
                        "list", [keys.all], [*head, scan, wanted, *state_tail, *task_tail]
                    )
                )
            for i, reply in zip(open_lanes, await conn.run(commands), strict=True):
                # A job that changed state between two rounds may be met by two lanes.
                found.update((r.id, r) for r in map(record, reply[2:]))
                frontier[i] = "" if reply[0] == "1" else reply[1]
                bounds[i] = f"({reply[1]}"
            open_lanes = [i for i in range(len(lanes)) if frontier[i]]
            # No unexamined id anywhere is above the highest open frontier.
            floor = max((frontier[i] for i in open_lanes), default="")
            if sum(1 for job_id in found if job_id >= floor) >= wanted:
                break
    return _page(list(found.values()), limit)


async def _lanes(
    conn: RedisConnection, names: list[str], states: list[str]
) -> list[tuple[str, tuple[str, ...], list[str]]]:
    """``(queue, index sets, states)`` per lane. With states asked, a queue's states whose
    index is small are read from their indexes, in one lane; the others are looked for by
    walking the queue's ids (no index sets), in another. Without states, the walk alone."""
    if not states or not names:
        return [(q, (), states) for q in names]
    replies = await conn.run([("HGETALL", conn.layout.queue(q).counts) for q in names])
    lanes: list[tuple[str, tuple[str, ...], list[str]]] = []
    for queue, counts in zip(names, replies, strict=True):
        small: list[str] = []
        large: list[str] = []
        for state in states:
            size = sum(int(counts.get(held, 0)) for held in _INDEXES[state][1])
            (small if size <= INDEX_MAX else large).append(state)
        if small:
            index = tuple(dict.fromkeys(k for s in small for k in _INDEXES[s][0]))
            lanes.append((queue, index, small))
        if large:
            lanes.append((queue, (), large))
    return lanes


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


async def read_change_token(conn: RedisConnection) -> str:
    """The ``ChangeFeed`` token: a digest of every queue's per-state counts, which each
    script already keeps in step with its change of state, so reading them adds nothing to
    the hot path. Moves that leave every count as it was between two reads (one job failing
    while another is retried out of failed, in the same queue) go unseen until the next."""
    async with conn.guard("reading the change token"):
        names = sorted(await conn.refresh_known())
        replies = (
            await conn.run([("HGETALL", conn.layout.queue(q).counts) for q in names])
            if names
            else []
        )
    digest = hashlib.blake2b(digest_size=12)
    for queue, fields in zip(names, replies, strict=True):
        digest.update(f"{queue}\x00{sorted(fields.items())}\x00".encode())
    return digest.hexdigest()
