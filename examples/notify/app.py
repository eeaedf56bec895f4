"""A notification service: registering a user queues a durable welcome email.

Run it from the repository root with ``uvicorn examples.notify.app:app``. Settings come from
the environment:

- ``OFFLOAD_URL``: the job store (default ``sqlite:///offload.db`` in the working directory);
- ``NOTIFY_API_TOKEN``: the bearer token for ``/jobs`` (default ``dev-token``, for local use
  only: set a long random value anywhere else);
- ``OFFLOAD_SMTP_HOST`` and the other ``OFFLOAD_SMTP_*`` settings: where to send mail. Without
  a host the welcome job logs the email instead of sending it, so the service runs with no
  SMTP server at all (``offload mail-sink`` gives a local one that captures mail);
- ``NOTIFY_LOG``: ``json`` (default: one JSON object per line on stderr), ``console`` (for a
  person), or ``off`` to leave logging to whoever embeds the app; ``NOTIFY_LOG_LEVEL``
  (default ``INFO``);
- ``NOTIFY_MAX_BODY_BYTES``: the largest request body accepted (default 1 MiB); a larger one
  is answered 413 before it is read.

Every request is logged once with its request id (pass ``--no-access-log`` to uvicorn to drop
its own access line); the welcome job's log lines carry the same id. Prometheus metrics are at
``/metrics``, behind the same bearer token as ``/jobs``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, EmailStr, Field

from offload import ConfigError, JobContext, Offload
from offload.email import PERMANENT_ERRORS, Address, EmailMessage, HeaderText, send_email
from offload.fastapi import (
    DEFAULT_MAX_BODY_SIZE,
    ENQUEUE_RESPONSES,
    Background,
    BodySizeLimitMiddleware,
    Detail,
    RequestLogMiddleware,
    jobs_router,
)
from offload.logging import configure_logging
from offload.metrics import install as install_metrics
from offload.metrics import render as render_metrics
from offload.redaction import register_secret

log = logging.getLogger("notify")

DEV_TOKEN = "dev-token"
API_TOKEN = os.environ.get("NOTIFY_API_TOKEN", DEV_TOKEN)
if API_TOKEN != DEV_TOKEN and len(API_TOKEN) >= 4:
    register_secret(API_TOKEN)  # never in a log line or an API answer
_max_body = os.environ.get("NOTIFY_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_SIZE))
if not _max_body.isdigit():
    raise ConfigError(f"NOTIFY_MAX_BODY_BYTES must be a number of bytes, got {_max_body!r}")
MAX_BODY_BYTES = int(_max_body)

jobs = Offload()
# Attached now, not by the first scrape, so the counters count every job from the start.
install_metrics(jobs)


# A permanent SMTP refusal (bad address, 5xx) or a message that does not validate will not get
# better on retry; anything else, such as the server being down for a minute, is retried with
# backoff.
@jobs.task(name="notify.send_welcome", retries=5, give_up_on=PERMANENT_ERRORS)
async def send_welcome(ctx: JobContext, email: str, name: str) -> dict[str, object]:
    if not os.environ.get("OFFLOAD_SMTP_HOST"):
        ctx.logger.info("no OFFLOAD_SMTP_HOST: welcome email to %s logged, not sent", email)
        return {"sent": False, "to": email}
    message = EmailMessage(
        to=[Address(email=email, name=name)],
        subject=f"Welcome, {name}!",
        text=f"Hello {name},\n\nthanks for registering.\n",
    )
    # The job id fixes the Message-ID, so a retried job resends the same message rather than
    # a second one that a mail client would show twice.
    return await send_email(message, job_id=ctx.job_id)


class Registration(BaseModel):
    email: EmailStr
    # The check the email layer applies to the display name and subject: a name the welcome
    # email could never carry (a line break, a control character) is a 422 naming the field.
    name: HeaderText = Field(min_length=1, max_length=100)


class Accepted(BaseModel):
    job_id: str
    status_url: str = Field(description="GET it (with the API token) to follow the job")


bearer = HTTPBearer(auto_error=False)


def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Guards the jobs API. ``compare_digest`` takes the same time whatever the guess, so the
    token cannot be found byte by byte from response times."""
    given = b"" if credentials is None else credentials.credentials.encode()
    if not secrets.compare_digest(given, API_TOKEN.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="send the API token as 'Authorization: Bearer <NOTIFY_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    mode = os.environ.get("NOTIFY_LOG", "json")
    if mode != "off":
        configure_logging(json=mode != "console", level=os.environ.get("NOTIFY_LOG_LEVEL", "INFO"))
    if API_TOKEN == DEV_TOKEN:
        log.warning(
            "NOTIFY_API_TOKEN is not set; /jobs accepts the development token",
            extra={"action": "notify.dev_token"},
        )
    async with jobs.lifespan(app):
        yield


app = FastAPI(title="notify", lifespan=lifespan)
# Inside the request log, so that a refused body is logged like any other request.
app.add_middleware(BodySizeLimitMiddleware, max_body_size=MAX_BODY_BYTES)
app.add_middleware(RequestLogMiddleware)
app.include_router(jobs_router(jobs, auth=require_token, prefix="/jobs"))


# A route rather than a mount, so that the jobs API's auth dependency guards it too.
@app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_token)])
async def metrics() -> Response:
    body, content_type = await render_metrics(jobs)
    return Response(body, media_type=content_type)


# FastAPI answers 400 to a body that is not text in UTF-8; add_task's answers are 413 and 503.
REGISTER_RESPONSES = {
    400: {"model": Detail, "description": "the body could not be read as JSON"},
    **ENQUEUE_RESPONSES,
}


@app.post("/register", status_code=status.HTTP_202_ACCEPTED, responses=REGISTER_RESPONSES)
async def register(user: Registration, background: Background, request: Request) -> Accepted:
    # The key makes a retried request (or a double click) return the same job instead of
    # sending a second welcome email.
    welcome = send_welcome.options(key=f"welcome:{user.email.lower()}")
    job = await background.add_task(welcome, user.email, user.name)
    status_url = request.app.url_path_for("offload_get_job", job_id=job.id)
    return Accepted(job_id=job.id, status_url=str(status_url))


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
