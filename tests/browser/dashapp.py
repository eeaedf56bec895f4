"""The app the browser tests drive: an embedded worker, a schedule, a task that fails until a
marker file exists, and mail into a sink of its own, all on a SQLite file named by the test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from offload import Offload
from offload.dashboard import basic_auth
from offload.email import EmailMessage, Mailer
from offload.email.sink import MailSink

USER, PASSWORD = "ops", "browser-test-pw"

jobs = Offload(os.environ["DASH_DB_URL"], embedded_worker=True)
sink = MailSink(port=0)
marker = Path(os.environ["DASH_MARKER"])


@jobs.task(name="demo.greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@jobs.task(name="demo.flaky", retries=0)  # sync: it reads a file
def flaky(order: int) -> str:
    if not marker.exists():
        raise RuntimeError(f"payment service down for order {order}")
    return f"order {order} charged"


@jobs.task(name="demo.mail")
async def mail(to: str) -> None:
    mailer = Mailer("127.0.0.1", sink.port, tls="none", sender="shop@example.com")
    await mailer.send(
        EmailMessage(
            to=[to], subject="Your receipt", text="Thanks!", html="<h1>Thanks!</h1><p>Receipt</p>"
        )
    )


jobs.schedule(greet, every=timedelta(hours=1), name="hourly-greeting", args=["cron"])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with sink, jobs.lifespan(app):
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(
    jobs.dashboard(auth=basic_auth(USER, PASSWORD), mail_sink=sink), prefix="/dashboard"
)


@app.post("/seed")
async def seed() -> dict[str, int]:
    for i in range(5):
        await greet.enqueue(f"guest {i}")
    await flaky.enqueue(42)
    await mail.enqueue("ann@example.com")
    return {"enqueued": 7}
