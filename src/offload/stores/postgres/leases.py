"""Lapsed leases in the PostgreSQL store: the reaper's pass, one transaction.

The running jobs whose lease lapsed are locked ``FOR UPDATE SKIP LOCKED`` (two reapers take
each once), queued again or failed when out of attempts, with the error the store words
and an entry in their history; a workflow step that failed so fails its workflow on
(steps.after) in the same transaction, and the workers of every queue concerned are
notified on commit.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from offload.stores._common import (
    dump_error,
    history_entry,
    lease_expired_error,
    lease_requeued_error,
)
from offload.stores.postgres import steps

__all__ = ["reap"]

Conn = psycopg.AsyncConnection[TupleRow]


async def reap(
    conn: Conn, q: dict[str, str], channel: str, limit: int
) -> tuple[int, list[str], set[str]]:
    """Take back up to ``limit`` lapsed leases; returns how many, the queues to wake, and
    the concurrency groups whose held jobs may now go."""
    async with conn.transaction():
        cur = await conn.execute(q["expired"], {"limit": limit})
        lapsed = await cur.fetchall()
        if not lapsed:
            return 0, [], set()
        lease_errors = [
            lease_expired_error(worker) if attempt >= most else lease_requeued_error(worker)
            for _, attempt, most, worker in lapsed
        ]
        cur = await conn.execute(
            q["reap"],
            {
                "ids": [r[0] for r in lapsed],
                "attempts": [r[1] for r in lapsed],
                "errors": [dump_error(e) for e in lease_errors],
                "entries": [
                    history_entry(e, r[1]) for e, r in zip(lease_errors, lapsed, strict=True)
                ],
            },
        )
        reaped = await cur.fetchall()
        # Steps out of attempts fail their workflows on, in this transaction.
        ended = [(r[2], *r[3:]) for r in reaped if r[3] is not None]
        released = await steps.after(conn, q, ended, channel)
        queues = sorted({str(r[0]) for r in reaped} | set(released))
        for queue in queues:
            await conn.execute(q["notify"], {"channel": channel, "queue": queue})
    return len(lapsed), queues, {str(r[1]) for r in reaped if r[1] is not None}
