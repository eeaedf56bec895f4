"""The app of the multi-process schedule test (`offload worker tests.integration.mpsched:jobs`).

One schedule firing every second; the store comes from ``$OFFLOAD_URL`` (or ``--url``).
"""

from __future__ import annotations

from datetime import timedelta

from offload import Offload

TASK = "mpsched.tick"

jobs = Offload(embedded_worker=False)


@jobs.periodic(every=timedelta(seconds=1), name="tick", catch_up="all")
@jobs.task(name=TASK)
async def tick() -> None: ...
