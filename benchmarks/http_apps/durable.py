"""offload's ``Background``: the job is in the store before the 202 goes out.

``HTTP_BENCH_URL`` names the store; ``HTTP_BENCH_WORKER=1`` runs the embedded worker in the
server process, anything else leaves the jobs queued for a worker elsewhere.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, status

from benchmarks.http_apps.common import Registration, setting
from offload import Offload
from offload.fastapi import Background

embedded = os.environ.get("HTTP_BENCH_WORKER") == "1"
jobs = Offload(setting("HTTP_BENCH_URL"), embedded_worker=embedded)


@jobs.task
async def welcome(email: str, name: str) -> None:
    """A no-op, as in the baseline: what is measured is the queueing."""


app = FastAPI(lifespan=jobs.lifespan)


@app.post("/register", status_code=status.HTTP_202_ACCEPTED)
async def register(user: Registration, background: Background) -> dict[str, str]:
    job = await background.add_task(welcome, user.email, user.name)
    return {"job_id": job.id}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
