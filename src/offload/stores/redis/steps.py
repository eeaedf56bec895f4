"""Workflows in the Redis store (``Workflows``): every rule runs inside the script of the
write that triggers it, so a step becomes runnable in the same script call as the success
of its last input, and a crash between two steps loses no edge.

A step is a job whose hash has a few fields more (prelude.lua names them): ``wf``, the key
of its workflow's hash of steps (job id -> job key prefix, under the hash tag of the
queue of the workflow's last step), how many inputs it still waits for, what it takes, and
where its own result goes. ``complete.lua`` and ``requeue.lua`` read ``wf`` beside the
fields they read anyway, so a job of no workflow costs no command, no key and no round
trip more; only a step's end runs the workflow's rules. A waiting step is queued, in its
queue's ``held`` set (so listings and the queue's backlog count it), in neither ready nor
delayed, so no claim sees it.

A call with steps is written by one script (``enqueue_flow.lua``) with the keys of each
of its queues: a workflow is stored whole or not at all. Steps of one workflow in several
queues sit under several hash tags, which one script may touch on a single server but not
on a Redis Cluster (``docs/redis.md``).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from offload.records import JobRecord, JobState, WaitingReason
from offload.stores.base import NewJob, Takes
from offload.stores.redis.caps import any_capped, cap_fields, is_capped, refusal
from offload.stores.redis.connection import RedisConnection
from offload.stores.redis.enqueue import give_back, job_fields, reserve_keys
from offload.stores.redis.layout import Layout, record, record_from

__all__ = ["enqueue_flow_steps", "workflow_key", "workflow_steps"]

Steps = Generator[list[tuple[Any, ...]], list[Any], list[JobRecord]]
_COMPACT = (",", ":")


def workflow_key(layout: Layout, queue: str, workflow: str) -> str:
    """The hash of a workflow's steps, under the hash tag of its last step's queue."""
    return f"{layout.queue(queue).job[:-4]}wf:{workflow}"


def enqueue_flow_steps(conn: RedisConnection, jobs: list[NewJob]) -> Steps:
    """``enqueue_steps`` for a call that holds workflow steps: the keys reserved first, as
    for any call, then the whole call in one ``enqueue_flow.lua`` call.

    A workflow whose last step's key another job holds takes that job's id and queue for
    its last step (as a lone job takes the holder's place): the script then stores nothing
    of it when that job is on record, and the workflow under that id when it is not (its
    first caller died between the two round trips)."""
    layout, scripts = conn.layout, conn.scripts
    targets = [(j.queue, j.id) for j in jobs]
    reserved = yield from reserve_keys(conn, jobs, targets)
    rename: dict[str, str] = {}
    last_queue: dict[str, str] = {}
    for i, j in enumerate(jobs):
        step = j.step
        if step is not None and j.id == step.workflow:
            last_queue[j.id] = targets[i][0]
            if targets[i][1] != j.id:
                rename[j.id] = targets[i][1]
    queues = list(dict.fromkeys(queue for queue, _ in targets))
    where = {queue: n for n, queue in enumerate(queues, 1)}
    where_of = {j.id: targets[i] for i, j in enumerate(jobs)}

    def prefix_of(job_id: str) -> tuple[str, str]:
        queue, real = where_of.get(job_id, (None, job_id))
        return layout.queue(queue or "default").job, rename.get(real, real)

    commands: list[tuple[Any, ...]] = [("SADD", layout.queues_key, *queues)]
    fresh = [q for q in queues if q not in conn.registered]
    if fresh:  # new to this process: wake workers serving all queues right away
        commands += [("LPUSH", layout.wake_key, "1"), ("LTRIM", layout.wake_key, 0, 63)]
    keys: list[str] = []
    args: list[Any] = [len(queues)]
    for queue in queues:
        q = layout.queue(queue)
        keys += [q.ready, q.delayed, q.all, q.counts, q.wake, q.held]
        args += [q.job, queue]
    for i, j in enumerate(jobs):
        queue, job_id = targets[i]
        fields = list(job_fields(j, rename.get(job_id, job_id)))
        step = j.step
        if step is not None and rename and j.meta.get("workflow") in rename:
            meta = {**j.meta, "workflow": rename[j.meta["workflow"]]}
            fields[10] = json.dumps(meta)
        capped = j.limits is not None and j.limits.max_queued is not None
        args += (where[queue], *fields, j.task if capped else "")
        if step is None:
            args += ("", "", 0, "", 0, "", "")
            continue
        wf = rename.get(step.workflow, step.workflow)
        wf_queue = last_queue.get(step.workflow, queue)
        feeds = [[*prefix_of(child), slot] for child, slot in step.feeds]
        handler = None if step.on_error is None else list(prefix_of(step.on_error))
        args += (
            workflow_key(layout, wf_queue, wf),
            layout.queue(wf_queue).job + wf,
            step.inputs,
            step.takes.value,
            0 if step.takes is Takes.ERROR else step.inputs,
            json.dumps(feeds, separators=_COMPACT) if feeds else "",
            "" if handler is None else json.dumps(handler, separators=_COMPACT),
        )
    if any_capped(jobs):
        known = {i for i, j in enumerate(jobs) if j.step is not None and j.step.workflow in rename}
        # Backlog limits: each queue with capped jobs is weighed by enqueue_capped.lua
        # first (a round trip of its own), as a call spanning queues is.
        weigh = []
        for queue in queues:
            # A workflow that takes a keyed job's place is likely on record: not counted.
            members = [i for i, (q, _) in enumerate(targets) if q == queue and i not in known]
            if any(is_capped(jobs[i]) for i in members):
                qk = layout.queue(queue)
                weighing: list[Any] = [qk.job, queue, "0"]
                for i in members:
                    weighing += (*job_fields(jobs[i], targets[i][1]), *cap_fields(jobs[i]))
                weigh.append(
                    scripts.evalsha(
                        "enqueue_capped",
                        [qk.ready, qk.delayed, qk.all, qk.counts, qk.wake, qk.held],
                        weighing,
                    )
                )
        for reply in (yield weigh) if weigh else []:
            full = refusal(reply, jobs)
            if full is not None:
                if reserved:
                    yield give_back(conn, jobs, targets, reserved)
                raise full
    commands.append(scripts.evalsha("enqueue_flow", keys, args))
    results = yield commands
    if fresh:
        conn.add_known(fresh)
    elif results[0]:  # the registry had lost a queue this process knew: wake workers now
        yield [("LPUSH", layout.wake_key, "1"), ("LTRIM", layout.wake_key, 0, 63)]
    reply = results[-1]
    enqueued_at = float(reply[0])
    out: list[JobRecord] = []
    for i, item in enumerate(reply[1:]):
        if isinstance(item, list):
            out.append(record(item))
            continue
        j = jobs[i]
        queue, job_id = targets[i]
        job_id = rename.get(job_id, job_id)
        meta = dict(j.meta)
        if "workflow" in meta and meta["workflow"] in rename:
            meta["workflow"] = rename[meta["workflow"]]
        waits = j.step is not None and j.step.inputs > 0
        out.append(
            JobRecord(
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
                meta=meta,
                waiting_reason=WaitingReason.INPUTS if waits else None,
            )
        )
    return out


async def workflow_steps(conn: RedisConnection, workflow: str) -> list[JobRecord]:
    """Every job of the workflow, ordered by id: its hash names them, under the tag of the
    queue that holds its last step."""
    layout = conn.layout
    async with conn.guard("reading a workflow"):
        queue = (await conn.locate([workflow])).get(workflow)
        if queue is None:
            return []
        [members] = await conn.run([("HGETALL", workflow_key(layout, queue, workflow))])
        ids = sorted(members)
        rows = await conn.run([("HGETALL", members[i] + i) for i in ids]) if ids else []
    return [record_from(fields) for fields in rows if fields]
