"""Backlog limits in the Redis store (``QueueCaps``): weighed inside the script that writes
the jobs, so producers of every process see one count and none passes a limit.

A call with a capped job (``JobLimits.max_queued`` or ``queue_max``) goes through
``enqueue_capped.lua`` instead of ``enqueue.lua``, which calls without one keep: their path
costs not one command more. The script counts, for each queue:

- a task's backlog from ``capped:<task>`` (set, under the queue's hash tag): the ids of its
  queued jobs enqueued with ``max_queued``. A job joins it when it is written, leaves it
  when it is claimed or cancelled, and joins it again when it is queued again (a retry, a
  lapsed lease, a requeue at shutdown, a retry by hand): the same scripts that move the job
  in and out of ``queued`` change the set, and a member is there or not, so no count can
  run ahead of the jobs. Such a job's ``limits`` field names its task (``ct``), which the
  scripts read beside the limits they read anyway;
- a queue's backlog from the sets that hold its queued jobs (ready, delayed, held).

Like the rate and concurrency limits, a task's limit holds per queue: its set sits under
the queue's hash tag (Redis Cluster), so a task enqueued into two queues has a backlog in
each. A job whose id is already on record (its idempotency key named it) adds nothing and
is not counted; a refused call stores nothing, and its keys are given back.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from offload.errors import QueueFull
from offload.stores.base import NewJob
from offload.stores.redis.connection import RedisConnection

__all__ = ["RETRY_AFTER", "any_capped", "cap_fields", "is_capped", "queued_depths", "refusal"]

# Seconds a refused caller is told to wait when nothing says how fast the backlog drains
# (the SQLite store's figure, so both answer alike).
RETRY_AFTER = 1.0
# The first element of the script's reply when it refused the call.
FULL = "!full"


def is_capped(job: NewJob) -> bool:
    lim = job.limits
    return lim is not None and (lim.max_queued is not None or lim.queue_max is not None)


_LIMITS = attrgetter("limits")


def any_capped(jobs: Sequence[NewJob]) -> bool:
    """Whether a call has a capped job; most calls have no job with limits at all, which
    the first scan (at C speed, no Python call per job) tells."""
    return any(map(_LIMITS, jobs)) and any(map(is_capped, jobs))


def cap_fields(job: NewJob) -> tuple[Any, Any]:
    """The two fields ``enqueue_capped.lua`` reads after enqueue.lua's twelve."""
    lim = job.limits
    if lim is None:
        return "", ""
    return (
        "" if lim.max_queued is None else lim.max_queued,
        "" if lim.queue_max is None else lim.queue_max,
    )


def refusal(reply: Any, jobs: Sequence[NewJob]) -> QueueFull | None:
    """The ``QueueFull`` a script's reply stands for, or None when it wrote the jobs."""
    if not reply or reply[0] != FULL:
        return None
    _, kind, name, limit, queued, adding = reply
    limit, queued, adding = int(limit), int(queued), int(adding)
    wait = RETRY_AFTER
    if kind == "task":
        rate = next(
            (j.limits.rate for j in jobs if j.task == name and j.limits and j.limits.rate), None
        )
        if rate:
            # With a rate limit, the backlog drains at that rate: ask to come back then.
            wait = max(RETRY_AFTER, (queued + adding - limit) / rate)
    return QueueFull(f"{kind} {name!r}", limit, queued, wait)


async def queued_depths(
    conn: RedisConnection, tasks: Sequence[str], queues: Sequence[str]
) -> dict[str, int]:
    """A task's capped queued jobs summed over the queues (its limit holds per queue), and
    each queue's queued jobs. One round trip."""
    tasks, queues = list(dict.fromkeys(tasks)), list(dict.fromkeys(queues))
    async with conn.guard("reading queue depths"):
        names = sorted(await conn.refresh_known(0.0)) if tasks else []
        commands: list[tuple[Any, ...]] = []
        for queue in names:
            keys = conn.layout.queue(queue)
            commands += [("SCARD", keys.limit("capped", task)) for task in tasks]
        for queue in queues:
            keys = conn.layout.queue(queue)
            commands += [("ZCARD", keys.ready), ("ZCARD", keys.delayed), ("ZCARD", keys.held)]
        replies = await conn.run(commands) if commands else []
    out = dict.fromkeys((f"task:{t}" for t in tasks), 0)
    at = 0
    for _ in names:
        for task in tasks:
            out[f"task:{task}"] += int(replies[at])
            at += 1
    for queue in queues:
        out[f"queue:{queue}"] = sum(int(r) for r in replies[at : at + 3])
        at += 3
    return out
