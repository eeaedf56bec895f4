"""The Redis store's enqueue as the round trips it takes (``enqueue_steps``): a sans-IO
generator that yields each round trip's commands and receives their replies, so the event
loop's path and the blocking one (``enqueue_sync``) share every decision.

A call without backlog limits costs what it always did: one round trip, plus one to reserve
idempotency keys when it has any. One with them goes through ``enqueue_capped.lua``
(caps.py), which weighs and writes each queue's jobs in one script call.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from offload.records import JobRecord, JobState
from offload.stores.base import NewJob
from offload.stores.redis.caps import any_capped, cap_fields, is_capped, refusal
from offload.stores.redis.connection import RedisConnection
from offload.stores.redis.flow import limits_field
from offload.stores.redis.layout import NUL, record

__all__ = ["Steps", "enqueue_steps", "give_back", "job_fields", "reserve_keys"]

Steps = Generator[list[tuple[Any, ...]], list[Any], list[JobRecord]]


def enqueue_steps(conn: RedisConnection, jobs: list[NewJob]) -> Steps:
    """Yields each round trip's commands, receives their replies, returns the records; a
    refused call (``QueueFull``) raises after giving back the keys it reserved."""
    layout, scripts = conn.layout, conn.scripts
    targets = [(j.queue, j.id) for j in jobs]
    reserved = yield from reserve_keys(conn, jobs, targets)
    groups: dict[str, list[int]] = {}
    for i, (queue, _) in enumerate(targets):
        groups.setdefault(queue, []).append(i)
    commands: list[tuple[Any, ...]] = []
    fresh = [q for q in groups if q not in conn.registered]
    # Every batch's queues join the registry before their jobs exist, so no job sits
    # in a queue that workers serving all queues do not know about: not even after
    # the registry was lost (FLUSHDB, or a restart without persistence) while this
    # process kept running. It rides in the same round trip.
    commands.append(("SADD", layout.queues_key, *groups))
    if fresh:  # new to this process: wake workers serving all queues right away
        commands.append(("LPUSH", layout.wake_key, "1"))
        commands.append(("LTRIM", layout.wake_key, 0, 63))
    some_capped = any_capped(jobs)
    weigh: list[tuple[str, tuple[Any, ...]]] = []
    capped_queues: set[str] = set()
    for queue, members in groups.items():
        keys = layout.queue(queue)
        capped = some_capped and any(is_capped(jobs[i]) for i in members)
        args: list[Any] = [keys.job, queue, "1"] if capped else [keys.job, queue]
        for i in members:
            j = jobs[i]
            # Spelled out rather than job_fields(): no Python call per job on this path.
            args += (
                targets[i][1],
                j.task,
                j.args,
                j.kwargs,
                j.priority,
                j.max_attempts,
                "" if j.run_at is None else repr(j.run_at),
                j.delay,
                "" if j.timeout is None else j.timeout,
                "" if j.key is None else j.key,
                json.dumps(j.meta) if j.meta else "",
                "" if j.limits is None else limits_field(j.limits, j.task),
            )
            if capped:
                args += cap_fields(j)
        if capped:
            capped_queues.add(queue)
            queue_keys = [keys.ready, keys.delayed, keys.all, keys.counts, keys.wake, keys.held]
            commands.append(scripts.evalsha("enqueue_capped", queue_keys, args))
            weighing = [*args[:2], "0", *args[3:]]
            weigh.append((queue, scripts.evalsha("enqueue_capped", queue_keys, weighing)))
        else:
            commands.append(
                scripts.evalsha(
                    "enqueue",
                    [keys.ready, keys.delayed, keys.all, keys.counts, keys.wake],
                    args,
                )
            )
    if capped_queues and len(groups) > 1:
        # Queues are apart (a Cluster slot each), so no one script can weigh a batch that
        # spans them: each capped queue is weighed first, and nothing is written if one
        # is full. A producer filling a queue between the two round trips can still make
        # that queue refuse its share of the write (the others' jobs stay).
        replies = yield [command for _, command in weigh]
        for reply in replies:
            full = refusal(reply, jobs)
            if full is not None:
                if reserved:
                    yield give_back(conn, jobs, targets, reserved)
                raise full
    results = yield commands
    if fresh:
        conn.add_known(fresh)
    elif results[0]:  # the registry had lost a queue this process knew: wake workers now
        yield [("LPUSH", layout.wake_key, "1"), ("LTRIM", layout.wake_key, 0, 63)]
    replies = results[-len(groups) :]
    if capped_queues:
        for (queue, _), reply in zip(groups.items(), replies, strict=True):
            full = refusal(reply, jobs) if queue in capped_queues else None
            if full is not None:
                refused = [i for i in reserved if targets[i][0] == queue]
                if refused:
                    yield give_back(conn, jobs, targets, refused)
                raise full
    out: list[JobRecord | None] = [None] * len(jobs)
    for (_, members), result in zip(groups.items(), replies, strict=True):
        enqueued_at = float(result[0])
        for i, item in zip(members, result[1:], strict=True):
            if isinstance(item, list):
                out[i] = record(item)
                continue
            j = jobs[i]
            queue, job_id = targets[i]
            # The required fields by position, as in _common.queued_record.
            out[i] = JobRecord(
                job_id,
                j.task,
                queue,
                j.args,
                j.kwargs,
                JobState.QUEUED,
                j.priority,
                0,
                j.max_attempts,
                float(item),
                enqueued_at,
                timeout=j.timeout,
                key=j.key,
                meta=dict(j.meta),
            )
    return [r for r in out if r is not None]


def reserve_keys(
    conn: RedisConnection, jobs: list[NewJob], targets: list[tuple[str, str]]
) -> Generator[list[tuple[Any, ...]], list[Any], list[int]]:
    """Reserve each idempotency key of the call first; a key already held names the job
    that holds it, whose ``(queue, id)`` replaces the job's target, which the enqueue script
    then returns (or creates, if its creator died between the two steps). Returns the
    positions whose key this call reserved. No round trip for a call without keys."""
    layout, scripts = conn.layout, conn.scripts
    keyed = [i for i, j in enumerate(jobs) if j.key is not None]
    reserved: list[int] = []
    if not keyed:
        return reserved
    # The task registry first, so no key is held by a task it does not name.
    tasks = sorted({jobs[i].task for i in keyed})
    _, *held = yield [
        ("SADD", layout.keyed_tasks_key, *tasks),
        *[
            scripts.evalsha(
                "reserve",
                [layout.idempotency_key(jobs[i].task, jobs[i].key or "")],
                [f"{jobs[i].queue}{NUL}{jobs[i].id}"],
            )
            for i in keyed
        ],
    ]
    for i, holder in zip(keyed, held, strict=True):
        if holder is not None:
            queue, _, job_id = holder.partition(NUL)
            targets[i] = (queue, job_id)
        else:
            reserved.append(i)
    return reserved


def job_fields(j: NewJob, job_id: str) -> tuple[Any, ...]:
    """A job's twelve fields as enqueue.lua reads them (``enqueue_steps`` spells them out)."""
    return (
        job_id,
        j.task,
        j.args,
        j.kwargs,
        j.priority,
        j.max_attempts,
        "" if j.run_at is None else repr(j.run_at),
        j.delay,
        "" if j.timeout is None else j.timeout,
        "" if j.key is None else j.key,
        json.dumps(j.meta) if j.meta else "",
        "" if j.limits is None else limits_field(j.limits, j.task),
    )


def give_back(
    conn: RedisConnection,
    jobs: list[NewJob],
    targets: list[tuple[str, str]],
    reserved: list[int],
) -> list[tuple[Any, ...]]:
    """Free the keys a refused call reserved for jobs it did not write, so that a caller
    trying again later is not answered with a job that never existed (only while the key
    still names that job)."""
    return [
        conn.scripts.evalsha(
            "release_key",
            [conn.layout.idempotency_key(jobs[i].task, jobs[i].key or "")],
            [f"{targets[i][0]}{NUL}{targets[i][1]}"],
        )
        for i in reserved
    ]
