"""Celery's ``delay()`` on its Redis transport, the way FastAPI users call it.

Runs only in ``benchmarks/peers/.venv`` (with FastAPI and uvicorn added), where Celery is
installed; it is imported through ``importlib`` so that the project's type check, which has
no Celery, still checks the rest of this module. ``HTTP_BENCH_REDIS`` is the broker and
``HTTP_BENCH_QUEUE`` the queue the messages wait in (no worker consumes them: the harness
counts them afterwards). ``delay`` blocks on a socket, so ``POST /register`` is a ``def``
endpoint (FastAPI runs it in its thread pool); ``POST /register-async`` calls it straight
from an ``async def`` endpoint, on the event loop, as some code does.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import FastAPI, status

from benchmarks.http_apps.common import Registration, setting

Celery: Any = importlib.import_module("celery").Celery

celery = Celery("http_bench", broker=setting("HTTP_BENCH_REDIS"))  # no result backend
celery.conf.task_default_queue = setting("HTTP_BENCH_QUEUE")


def _welcome(email: str, name: str) -> None:
    """A no-op, as in the baseline."""


welcome: Any = celery.task(name="http_bench.welcome")(_welcome)

app = FastAPI()


@app.post("/register", status_code=status.HTTP_202_ACCEPTED)
def register(user: Registration) -> dict[str, str]:
    return {"task_id": str(welcome.delay(user.email, user.name).id)}


@app.post("/register-async", status_code=status.HTTP_202_ACCEPTED)
async def register_async(user: Registration) -> dict[str, str]:
    return {"task_id": str(welcome.delay(user.email, user.name).id)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
