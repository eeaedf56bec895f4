"""notify: the reference service, every kind of background work a FastAPI app has.

Run it from the repository root with ``uvicorn examples.notify.app:app`` (``scripts/demo``
starts it with the development mail sink), and separate workers with ``offload worker
examples.notify.app:jobs``. Settings come from the environment or ``.env``: see
``examples/notify/settings.py`` and the README's section on the service.

- ``POST /register``: a user and their welcome email (``409`` for an email registered before);
- ``POST /send-notification``: one email job per recipient, idempotent by header;
- ``POST /orders``: an order and its confirmation email, in one transaction on PostgreSQL;
- ``POST /files``, ``GET /files/{id}``: a CSV converted and cleaned, with progress (over
  ``NOTIFY_CHUNK_MB``, by a workflow: chunks cleaned in parallel, merged by a chord);
- ``POST /images``, ``GET /images/{id}``: thumbnails made on the CPU pool;
- ``POST /webhooks/payments``: a signed payment callback, processed once per event;
- ``GET /stats``: a summary a job rebuilds every 5 minutes; a daily report mailed at 00:00;
- ``/jobs``, ``/dashboard``, ``/metrics``, ``/healthz`` (and ``/health`` for load balancers).

Every request is logged once with its request id; the jobs it creates log the same id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from examples.notify.api import Accepted, Registration, api_router
from examples.notify.db import database
from examples.notify.service import RETRY_AFTER, Service, unavailable
from examples.notify.settings import Settings, api_token, configure
from examples.notify.tasks import Tasks
from offload import Offload, PayloadTooLarge, QueueFull, StoreUnavailable
from offload.dashboard import basic_auth
from offload.fastapi import BodySizeLimitMiddleware, Detail, RequestLogMiddleware, jobs_router
from offload.logging import configure_logging
from offload.metrics import install as install_metrics
from offload.metrics import render as render_metrics
from offload.redaction import register_secret

__all__ = ["Accepted", "Registration", "app", "jobs", "send_welcome", "settings"]

log = logging.getLogger("notify")

settings = configure(Settings())
TOKEN, TOKEN_IS_NEW = api_token(settings)
register_secret(TOKEN)  # never in a log line or an API answer
register_secret(settings.webhook_secret.get_secret_value())

jobs = Offload(settings.store_url, embedded_worker=settings.embedded_worker)
# Attached now, not by the first scrape, so the counters count every job from the start.
install_metrics(jobs)
tasks = Tasks(jobs, settings)
send_welcome = tasks.send_welcome
service = Service(settings, jobs, tasks, TOKEN)
require_token = service.require_token()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if settings.log != "off":
        configure_logging(json=settings.log == "json", level=settings.log_level)
    if TOKEN_IS_NEW:
        # Printed once, on the start that made it; it stays in the data folder.
        print(f"notify: API token (kept in {settings.data_dir}/api-token): {TOKEN}", flush=True)
    async with jobs.lifespan(app):
        try:
            yield
        finally:
            await database.dispose()


app = FastAPI(title="notify", lifespan=lifespan)
# Inside the request log, so that a refused body is logged like any other request.
app.add_middleware(
    BodySizeLimitMiddleware,
    max_body_size=settings.max_body_bytes,
    paths={"/files": settings.max_upload_mb << 20, "/images": settings.max_image_mb << 20},
)
app.add_middleware(RequestLogMiddleware)
app.include_router(jobs_router(jobs, auth=require_token, prefix="/jobs"))
app.include_router(api_router(service))
from examples.notify.uploads import uploads_router  # noqa: E402

app.include_router(uploads_router(service))
app.include_router(
    jobs.dashboard(
        auth=basic_auth("admin", TOKEN),
        mail_sink=settings.mail_sink_url or None,
        title="notify",
    ),
    prefix="/dashboard",
    include_in_schema=False,
)


@app.exception_handler(StoreUnavailable)
async def store_down(request: Request, exc: StoreUnavailable) -> Response:
    refused = unavailable("the job store", exc)
    return JSONResponse({"detail": refused.detail}, 503, headers={"Retry-After": str(RETRY_AFTER)})


@app.exception_handler(DBAPIError)
async def database_down(request: Request, exc: DBAPIError) -> Response:
    if not exc.connection_invalidated and not isinstance(exc, OperationalError):
        raise exc
    log.warning(
        "the service's database did not answer",
        extra={"action": "notify.database_error", "error": str(exc.orig)},
    )
    detail = "the service's database is unavailable; retry the request later"
    return JSONResponse({"detail": detail}, 503, headers={"Retry-After": str(RETRY_AFTER)})


@app.exception_handler(QueueFull)
async def backlog_full(request: Request, exc: QueueFull) -> Response:
    headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return JSONResponse({"detail": f"{exc.what} is full; retry later"}, 429, headers=headers)


@app.exception_handler(PayloadTooLarge)
async def too_large(request: Request, exc: PayloadTooLarge) -> Response:
    return JSONResponse({"detail": f"the job would be {exc.size:,} bytes, over the limit"}, 413)


# A route rather than a mount, so that the jobs API's auth dependency guards it too.
@app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_token)])
async def metrics() -> Response:
    body, content_type = await render_metrics(jobs)
    return Response(body, media_type=content_type)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/healthz", responses={503: {"model": Detail, "description": "a store is down"}})
async def healthz() -> Any:
    """Both stores answer: the job store and the service's database."""
    checks = {"store": "ok", "database": "ok"}
    try:
        await jobs.open()
        await jobs.store.now()
    except Exception as exc:
        checks["store"] = f"unavailable: {type(exc).__name__}"
    try:
        engine = await database.engine(settings.db_url)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if checks != {"store": "ok", "database": "ok"}:
        detail = ", ".join(f"{k} {v}" for k, v in checks.items())
        return JSONResponse({"detail": detail}, 503, headers={"Retry-After": str(RETRY_AFTER)})
    return {"status": "ok", **checks}
