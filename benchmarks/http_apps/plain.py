"""The baseline: FastAPI's ``BackgroundTasks``, in memory, lost if the process dies."""

from __future__ import annotations

from fastapi import BackgroundTasks, FastAPI, status

from benchmarks.http_apps.common import Registration


async def welcome(email: str, name: str) -> None:
    """A no-op; async, so that Starlette runs it on the loop and not in its thread pool."""


app = FastAPI()


@app.post("/register", status_code=status.HTTP_202_ACCEPTED)
async def register(user: Registration, background: BackgroundTasks) -> dict[str, str]:
    background.add_task(welcome, user.email, user.name)
    return {"status": "accepted"}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
