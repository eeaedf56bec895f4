"""Rate and concurrency limits in the PostgreSQL store, weighed at claim for every worker of
every process.

A claim takes its jobs as ever, in one autocommitted statement that returns one more
column, not NULL only for a job with limits; a claim of jobs without limits costs nothing
else. When limited jobs come back, ``admit`` weighs them in a transaction of its own on the
same connection: it takes a transaction-level advisory lock per key they name, in key
order, so the claims of one group or bucket go one at a time and every other key's go on;
then it counts the group's running rows (by a snapshot taken after the lock, so it holds
every claim of the group committed before) and refills the bucket by the server's clock as
read under the lock, and puts back the jobs
the limits hold (``flow_hold``): queued again, their attempt given back.

The claimed jobs of a group that are not yet weighed count as running for the others that
weigh meanwhile; each claim holds its own jobs while the count is above the limit, so the
jobs kept never pass it, and none is held for a claim that itself holds its jobs. A job that
stops running lets the held jobs of its group go (``release``), under the same lock, so a
hold and a release never miss each other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from offload.records import JobRecord, WaitingReason
from offload.stores._common import keeps_token, sort_key
from offload.stores.base import LimitUsage, NewJob
from offload.stores.postgres.rows import record

__all__ = ["FAR", "admit", "claim", "limit_params", "release", "usage"]

Conn = psycopg.AsyncConnection[TupleRow]

# Where a job held for a slot waits (9999-01-01, seconds since the epoch): beyond any
# claim's "due by now", in the same index range as every job not yet due; its real due
# time is in held_run_at.
FAR = 253370764800.0

# The columns of a claimed job's row that ``record`` reads; after them come its limits
# (rate_key, rate, burst, conc_key, conc_limit) and what it waited for.
_JOB = 22
_RATE_KEY = _JOB
_CONC_KEY = _JOB + 3

Limits = tuple[Any, ...]

# How many due jobs of a bucket that no claim has weighed yet a claim that holds jobs for
# the bucket holds with them, in one statement: a backlog of thousands queued at once is
# otherwise held one claim round after another, and at 1,000/s the tokens of the first
# jobs held have gone by before the last round ends (those jobs are then weighed again,
# behind the others, and their tokens are lost).
HOLD_AHEAD = 10_000

_CONCURRENCY = WaitingReason.CONCURRENCY.value
_RATE_LIMIT = WaitingReason.RATE_LIMIT.value


def limit_params(jobs: Sequence[NewJob]) -> dict[str, Any]:
    """The limits of each job of an ``enqueue_limited`` batch, NULL for the unlimited."""
    limits = [j.limits for j in jobs]
    return {
        "rate_keys": [None if lim is None else lim.rate_key for lim in limits],
        "rates": [None if lim is None or lim.rate is None else float(lim.rate) for lim in limits],
        "bursts": [None if lim is None else lim.burst for lim in limits],
        "conc_keys": [None if lim is None else lim.concurrency_key for lim in limits],
        "conc_limits": [None if lim is None else lim.concurrency for lim in limits],
        "max_queueds": [None if lim is None else lim.max_queued for lim in limits],
    }


async def claim(
    conn: Conn, query: str, params: dict[str, Any], q: dict[str, str], prefix: str
) -> list[JobRecord]:
    """Take up to ``params["limit"]`` due jobs. The jobs a limit holds back leave the due
    range as they are put back, so the claim goes on for the places they left, until it
    has its number or nothing due is left. Except once it has kept a job on a token: then
    it returns at once, even with places left, since the kept jobs start only when the
    claim returns, and each further round to hold a backlog of hundreds would make them
    start later than the tokens they took (the worker claims again at once for its
    places)."""
    limit = params["limit"]
    taken: list[JobRecord] = []
    while True:
        cur = await conn.execute(query, params)
        rows = await cur.fetchall()
        jobs = [record(r[:_JOB]) for r in rows]
        limited = {
            j.id: (j, r[_JOB:])
            for j, r in zip(jobs, rows, strict=True)
            if r[_RATE_KEY] is not None or r[_CONC_KEY] is not None
        }
        if not limited:
            taken += jobs
            return taken
        held = await admit(conn, q, list(limited.values()), params["worker"], prefix)
        taken += [j for j in jobs if j.id not in held]
        tokens = any(lim[0] is not None and i not in held for i, (_, lim) in limited.items())
        if tokens or not held or len(rows) < params["limit"]:
            return taken
        params = {**params, "limit": limit - len(taken)}


async def _lock(conn: Conn, q: dict[str, str], prefix: str, keys: Iterable[str]) -> None:
    await conn.execute(q["flow_lock"], {"prefix": prefix, "keys": sorted(set(keys))})


async def admit(
    conn: Conn,
    q: dict[str, str],
    claimed: list[tuple[JobRecord, Limits]],
    worker: str,
    prefix: str,
) -> set[str]:
    """Weigh the limited jobs of a claim, in claim order; return the ids held back, which
    are already put back in the queue. Each weighing reads the server's clock of its own:
    only a claim's last round keeps jobs on tokens (``claim``), so the rounds before it
    start nothing on a token that a later refill could bunch with.

    A job held for a token takes it as it is held: the bucket goes below zero by one, and
    the job is due when that token will have come in. Claimed then (or a little later:
    ``keeps_token``), it starts without being weighed again, so the tokens a bucket
    makes are never lost to the gaps between claims, and the jobs behind a bucket are each
    held once rather than weighed again at every claim.

    The statements go in two pipelined round trips, not one each: the transaction, the lock
    and the reads; then the holds, the buckets and the commit. The lock is held for the
    time between them, and every claim of the key waits for it (at a limit of 1,000/s one
    round trip less per claim is several jobs sooner)."""
    claimed = sorted(claimed, key=lambda c: sort_key(c[0]))
    found = [(job.id, *lim) for job, lim in claimed]
    limits = {r[0]: r[1:7] for r in found}
    conc_keys = sorted({r[4] for r in found if r[4] is not None})
    rate_keys = sorted({r[1] for r in found if r[1] is not None})
    async with conn.pipeline(), conn.transaction():
        await _lock(conn, q, prefix, (*conc_keys, *rate_keys))
        counting = rating = None
        if conc_keys:
            counting = await conn.execute(q["flow_running"], {"keys": conc_keys})
        if rate_keys:
            rating = await conn.execute(q["flow_buckets"], {"keys": rate_keys})
        running: dict[str, int] = {}
        if counting is not None:
            counted: dict[str, int] = {str(k): int(n) for k, n in await counting.fetchall()}
            in_claim = Counter(r[4] for r in found if r[4] is not None)
            # The claim's own rows are running already: count only the others.
            running = {k: int(counted.get(k, 0)) - in_claim[k] for k in conc_keys}
        buckets: dict[str, float] = {}
        saved_at: dict[str, float] = {}
        now = 0.0  # read with the buckets: only a rate needs the time
        if rating is not None:
            rows = await rating.fetchall()
            # The server's clock under the lock, not the transaction's start: a claim that
            # began before the last holder of the lock but took it after would refill the
            # bucket with time its predecessor already counted.
            now = float(rows[0][3])
            stored = {k: (float(t), float(at)) for k, t, at, _ in rows if t is not None}
            for key in rate_keys:
                rate, burst = next((r[2], r[3]) for r in found if r[1] == key)
                tokens, at = stored.get(key, (float(burst), now))
                buckets[key] = min(float(burst), tokens + max(0.0, now - at) * rate)
                # Never set back: a claim that read the clock before another took the lock
                # finds that one's time in the bucket. The bucket then counts from that
                # time, and so do the due times of the jobs it holds: counted from the
                # older clock, they would fall among those the other claim gave.
                saved_at[key] = max(now, at)
        holds: list[tuple[str, str, float]] = []
        for job, (rate_key, rate, _, conc_key, conc_limit, waited) in claimed:
            if conc_key is not None and running[conc_key] >= conc_limit:
                holds.append((job.id, _CONCURRENCY, FAR))
                continue
            if rate_key is not None and not keeps_token(
                waited, job.run_at, saved_at[rate_key], rate
            ):
                tokens = buckets[rate_key]
                buckets[rate_key] = tokens - 1.0
                if tokens < 1.0:
                    # Due when its token will be in the bucket.
                    due = saved_at[rate_key] + (1.0 - tokens) / rate
                    holds.append((job.id, _RATE_LIMIT, due))
                    continue
            if conc_key is not None:
                running[conc_key] += 1
        held = {h[0] for h in holds}
        if holds:
            await conn.execute(
                q["flow_hold"],
                {
                    "ids": [h[0] for h in holds],
                    "waiting": [h[1] for h in holds],
                    "dues": [h[2] for h in holds],
                    "worker": worker,
                },
            )
        kept = [i for i in limits if i not in held]
        if kept:
            await conn.execute(q["flow_admitted"], {"ids": kept})
        for key, tokens in buckets.items():
            if tokens < 1.0:  # no token for the next job: hold the backlog for the next
                rate = next(r[2] for r in found if r[1] == key)
                ahead = {"key": key, "limit": HOLD_AHEAD, "base": saved_at[key],
                         "tokens": tokens, "rate": rate}  # fmt: skip
                cur = await conn.execute(q["flow_hold_ahead"], ahead)
                buckets[key] = tokens - len(await cur.fetchall())
        if buckets:
            params = {
                "keys": list(buckets),
                "tokens": list(buckets.values()),
                "ats": [saved_at[k] for k in buckets],
            }
            await conn.execute(q["flow_save_buckets"], params)
    return held


async def release(
    conn: Conn, q: dict[str, str], keys: Iterable[str] | None, prefix: str, channel: str
) -> list[str]:
    """After jobs of the groups ``keys`` stopped running (``None``: every group that holds
    jobs): give the jobs held for a slot of a group that now has one free their due time
    back, and wake the workers of their queues; returns those queues."""
    if keys is None:
        cur = await conn.execute(q["flow_held_groups"])
        keys = [str(r[0]) for r in await cur.fetchall()]
    wanted = sorted(set(keys))
    if not wanted:
        return []
    async with conn.transaction():
        await _lock(conn, q, prefix, wanted)
        cur = await conn.execute(q["flow_release"], {"keys": wanted})
        queues = sorted({str(r[0]) for r in await cur.fetchall()})
        for queue in queues:
            await conn.execute(q["notify"], {"channel": channel, "queue": queue})
    return queues


async def usage(conn: Conn, q: dict[str, str], keys: Sequence[str]) -> list[LimitUsage]:
    cur = await conn.execute(q["flow_usage"], {"keys": list(keys)})
    # Tokens below zero are promised to jobs held for them: none to take.
    return [
        LimitUsage(str(k), int(r), None if t is None else max(0.0, float(t)), int(w))
        for k, r, w, t in await cur.fetchall()
    ]
