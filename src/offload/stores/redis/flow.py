"""Rate and concurrency limits in the Redis store (``FlowControl``): weighed inside the
claim script, so every worker of every process sees one count.

A limited job carries its limits in its hash (``limits``, the JSON ``limits_field`` makes);
the claim script reads that one field beside the state it reads anyway, so a job without
limits costs no command and no key more. A job whose concurrency key runs its limit waits
in the key's held set (not in ready), and comes back to ready when a job of that key stops
running (complete, a lapsed lease, a cancelled job that had been let out); one whose bucket
has no token waits in the delayed set until its token is due. Each key of a limit sits
under the queue's hash tag (``QueueKeys.limit``), so a limit holds per queue: jobs of one
key in two queues have a limit each.

Per queue and limit key:

- ``conc_running:<key>`` (set): the jobs of the key now running, changed by the same
  scripts that move a job in and out of ``running``, so it cannot drift from it;
- ``conc_held:<key>`` (sorted set, scored as ready): the jobs waiting for a slot; the
  queue's ``held`` set holds them all again, for listing;
- ``bucket:<key>`` (hash): ``tokens`` and ``at``, the bucket as of its last refill;
- ``rate_waiting:<key>`` (sorted set, scored by due time): the jobs waiting for a token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from offload.records import JobLimits
from offload.stores.base import LimitUsage
from offload.stores.redis.connection import RedisConnection

__all__ = ["limit_usage", "limits_field"]


def limits_field(limits: JobLimits, task: str) -> str:
    """A job's limits as the scripts read them (see prelude.lua): ``ck``/``cl`` for its
    concurrency key and limit, ``rk``/``rate``/``burst`` for its token bucket, ``ct`` its
    task when the task has a backlog limit (caps.py); empty when it has none of them (a
    queue's limit alone), so that its claims take the path of unlimited jobs."""
    out: dict[str, object] = {}
    if limits.max_queued is not None:
        out["ct"] = task
    if limits.concurrency_key is not None and limits.concurrency is not None:
        out["ck"] = limits.concurrency_key
        out["cl"] = limits.concurrency
    if limits.rate_key is not None and limits.rate is not None:
        out["rk"] = limits.rate_key
        out["rate"] = limits.rate
        out["burst"] = limits.burst
    return json.dumps(out, separators=(",", ":")) if out else ""


async def limit_usage(conn: RedisConnection, keys: Sequence[str]) -> list[LimitUsage]:
    """Each key's usage summed over the queues (a limit holds per queue): jobs running and
    waiting, and the tokens of its buckets as of their last refill (None when no queue has
    one yet). One round trip of four commands per queue and key."""
    asked = list(keys)
    keys = list(dict.fromkeys(asked))
    async with conn.guard("reading limit usage"):
        names = sorted(await conn.refresh_known(0.0))
        commands = []
        for queue in names:
            q = conn.layout.queue(queue)
            for key in keys:
                commands += [
                    ("SCARD", q.limit("conc_running", key)),
                    ("ZCARD", q.limit("conc_held", key)),
                    ("ZCARD", q.limit("rate_waiting", key)),
                    ("HGET", q.limit("bucket", key), "tokens"),
                ]
        replies = await conn.run(commands) if commands else []
    running = dict.fromkeys(keys, 0)
    waiting = dict.fromkeys(keys, 0)
    tokens: dict[str, float] = {}
    step = 4 * len(keys)
    for start in range(0, len(replies), step):
        for i, key in enumerate(keys):
            run, held, rate_held, left = replies[start + 4 * i : start + 4 * i + 4]
            running[key] += int(run)
            waiting[key] += int(held) + int(rate_held)
            if left is not None:
                # Below zero: tokens promised to jobs held for them; none to take.
                tokens[key] = tokens.get(key, 0.0) + max(0.0, float(left))
    return [
        LimitUsage(key, running=running[key], tokens=tokens.get(key), waiting=waiting[key])
        for key in asked
    ]
