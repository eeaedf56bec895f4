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

from tests.stores.redis_helpers import make_app, run_producer

_runs = os.environ.get("CHAOS_RUNS")
jobs = make_app(os.environ.get("OFFLOAD_URL", ""), Path(_runs) if _runs else None)


if __name__ == "__main__":
    _, first, count, acked, retries = sys.argv
    url = os.environ.get("OFFLOAD_URL", "")
    asyncio.run(run_producer(url, int(first), int(count), Path(acked), Path(retries)))
