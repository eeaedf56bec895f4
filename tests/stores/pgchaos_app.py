"""The app and the producer of the PostgreSQL chaos tests, for their subprocesses only.

``offload worker tests.stores.pgchaos_app:jobs`` serves the Redis chaos tests' recording task
(``tests.stores.redis_helpers``) on ``$OFFLOAD_URL``, appending each run to ``$CHAOS_RUNS``.
``python -m tests.stores.pgchaos_app FIRST COUNT ACKED RETRIES`` enqueues jobs
``FIRST..FIRST+COUNT``, writing each acknowledged one to ACKED and each enqueue that met
StoreUnavailable (and was sent again) to RETRIES, one ``os.write`` a line, so that a test can
count what the outage refused as well as what was accepted.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from offload.errors import StoreUnavailable
from tests.stores.redis_helpers import BATCH, TASK, make_app

_runs = os.environ.get("CHAOS_RUNS")
jobs = make_app(os.environ.get("OFFLOAD_URL", ""), Path(_runs) if _runs else None)


async def produce(first: int, count: int, acked: Path, retries: Path) -> None:
    """Batches of BATCH keyed jobs; a batch refused by StoreUnavailable is sent again, which
    its idempotency keys make safe even when the refused attempt had in fact committed."""
    task = jobs.get_task(TASK)
    acked_fd = os.open(acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    retries_fd = os.open(retries, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    while True:
        try:
            await jobs.open()
            break
        except StoreUnavailable:
            await asyncio.sleep(0.2)
    for start in range(first, first + count, BATCH):
        numbers = range(start, min(start + BATCH, first + count))
        while True:
            try:
                await jobs.enqueue_many([task.options(key=f"n{n}").prepare(n) for n in numbers])
            except StoreUnavailable as exc:
                os.write(retries_fd, f"{start} {str(exc).splitlines()[0]}\n".encode())
                await asyncio.sleep(0.1)
                continue
            break
        os.write(acked_fd, "".join(f"{n}\n" for n in numbers).encode())
    await jobs.close()


if __name__ == "__main__":
    _, first, count, acked, retries = sys.argv
    asyncio.run(produce(int(first), int(count), Path(acked), Path(retries)))
