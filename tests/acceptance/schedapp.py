"""The application the schedule CLI tests name: ``tests.acceptance.schedapp:jobs``."""

from __future__ import annotations

from datetime import timedelta

from offload import Offload

jobs = Offload(embedded_worker=False)


@jobs.periodic(cron="0 3 * * *", timezone="Europe/Berlin", name="nightly")
@jobs.task(name="cleanup")
async def cleanup() -> None: ...


@jobs.periodic(every=timedelta(minutes=5), name="poll")
async def poll() -> None: ...
