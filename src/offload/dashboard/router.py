"""The dashboard's routes: server-rendered pages that work without JavaScript, and the actions
behind them, every one behind the app's auth dependency and every action behind a CSRF token.

Pages read through ``views`` and act through ``offload.admin``, so a retry here means what it
means in the jobs API and on the command line, and a secret hidden there is hidden here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from offload import admin
from offload.dashboard import views
from offload.dashboard.live import wait_for_change
from offload.dashboard.mail import MailSource, MailUnavailable, Shown
from offload.dashboard.security import CsrfGuard, SecureRoute, mail_html_headers
from offload.errors import (
    ConfigError,
    InvalidCursor,
    InvalidTransition,
    JobNotFound,
    StoreUnavailable,
    UnknownSchedule,
)
from offload.fastapi.background import RETRY_AFTER_SECONDS
from offload.fastapi.outage import outage_of
from offload.records import JobState
from offload.stores.base import JobFilter, Page

if TYPE_CHECKING:
    from offload.app import Offload
    from offload.email.sink import MailSink

__all__ = ["dashboard_router"]

log = logging.getLogger("offload.dashboard")

PAGE_SIZE = 50
# Form bodies are a token and a flag; anything larger is not one of our forms.
MAX_FORM_BYTES = 4096
STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
JOB_ACTIONS = ("retry", "cancel", "delete")
DONE = {
    "retry": "Queued again.",
    "cancel": "Cancelled (a running job stops at its next check).",
    "delete": "Deleted.",
    "retry-failed": "Failed jobs queued again.",
    "pause": "Paused on every instance.",
    "resume": "Resumed from its next slot.",
}


def _notice(request: Request) -> str | None:
    """The line an action's redirect asks for: fixed texts only (a link cannot make the page
    say something of its own), with the count of a bulk retry."""
    kind = request.query_params.get("done", "")
    text = DONE.get(kind)
    count = request.query_params.get("retried", "")
    if text is not None and kind == "retry-failed" and count.isdigit():
        text = f"{int(count)} failed jobs queued again."
    return text


class _PageError(Exception):
    """An answer other than the page asked for, rendered as a page of its own."""

    def __init__(self, code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.title = title
        self.message = message


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("offload.dashboard", "templates"),
        # Every value on every page is escaped: job arguments are whatever a client sent.
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = views.format_time
    env.filters["duration"] = views.format_duration
    return env


def _user_name(user: Any) -> str:
    if user is None:
        return "anonymous"
    for attribute in ("name", "username", "email"):
        value = getattr(user, attribute, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(user, dict):
        for key in ("name", "username", "email", "sub"):
            if isinstance(user.get(key), str):
                return str(user[key])
    return str(user)


def _identify(auth: Callable[..., Any] | None) -> Callable[..., Any]:
    """The router-wide dependency: runs ``auth`` (a default value, not an annotation, so it
    works however this module's annotations are evaluated) and keeps who it returned."""
    if auth is None:

        async def anonymous(request: Request) -> None:
            request.state.offload_user = "anonymous"

        return anonymous

    # A default built from the argument, on purpose: the dependency is the caller's.
    async def identify(request: Request, user: Any = Depends(auth)) -> None:
        request.state.offload_user = _user_name(user)

    return identify


def dashboard_router(
    jobs: Offload,
    *,
    auth: Callable[..., Any] | None = None,
    allow_anonymous: bool = False,
    mail_sink: MailSink | str | None = None,
    secret: str | None = None,
    log_url: str | None = None,
    title: str = "offload",
) -> APIRouter:
    """Build the dashboard for ``jobs``; mount it with ``app.include_router(..., prefix=...)``.

    ``auth`` is a FastAPI dependency that raises ``HTTPException(401/403)`` for a stranger
    and returns who the user is (``offload.dashboard.basic_auth()`` and ``bearer_auth()``
    are ready-made). Without it the dashboard is refused unless ``allow_anonymous=True``.
    ``mail_sink`` is a ``MailSink`` of this process or the URL of a sink's JSON view, for the
    mail page; ``secret`` signs the CSRF tokens (the same on every instance behind one
    address; by default a fresh one per process); ``log_url`` links a job to its log lines,
    with ``{job_id}`` and ``{request_id}`` filled in.
    """
    if auth is None and not allow_anonymous:
        raise ConfigError(
            "dashboard() needs auth=<a FastAPI dependency that checks credentials> (for "
            "example offload.dashboard.basic_auth()), since the dashboard shows job "
            "arguments and results and can retry, cancel and delete jobs; pass "
            "allow_anonymous=True to serve it to anyone on purpose"
        )
    if auth is None:
        log.warning(
            "the dashboard is served without authentication (allow_anonymous=True)",
            extra={"action": "dashboard.anonymous"},
        )
    env = _environment()
    csrf = CsrfGuard(secret)
    activity = views.ActivityCache()
    mail = None if mail_sink is None else MailSource(mail_sink)
    static = {
        name: (resources.files("offload.dashboard").joinpath("static", name).read_bytes(), kind)
        for name, kind in STATIC.items()
    }
    router = APIRouter(
        route_class=SecureRoute,
        dependencies=[Depends(_identify(auth))],
        include_in_schema=False,
    )

    def page(request: Request, template: str, code: int = 200, **values: Any) -> HTMLResponse:
        user = request.state.offload_user

        def url(name: str, /, query: dict[str, Any] | None = None, **params: Any) -> str:
            path = request.url_for(name, **params).path
            pairs = [(k, v) for k, v in (query or {}).items() if v not in (None, "", ())]
            flat = [(k, x) for k, v in pairs for x in (v if isinstance(v, list | tuple) else [v])]
            return path + ("?" + urllib.parse.urlencode(flat) if flat else "")

        html = env.get_template(template).render(
            request=request,
            url=url,
            user=user,
            csrf=csrf.token(user),
            title=title,
            has_mail=mail is not None,
            notice=_notice(request),
            **values,
        )
        return HTMLResponse(html, status_code=code)

    def error_page(request: Request, exc: _PageError) -> HTMLResponse:
        response = page(request, "error.html", exc.code, heading=exc.title, message=exc.message)
        if exc.code == status.HTTP_503_SERVICE_UNAVAILABLE:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @contextlib.asynccontextmanager
    async def store_call() -> AsyncIterator[None]:
        outage = outage_of(jobs)
        try:
            await jobs.open()
            yield
        except (StoreUnavailable, OSError) as exc:
            outage.failed(exc)
            raise _PageError(
                503, "Job store unavailable", f"The job store did not answer: {exc}"
            ) from exc
        except (JobNotFound, UnknownSchedule) as exc:
            raise _PageError(404, "Not found", str(exc)) from exc
        except InvalidTransition as exc:
            raise _PageError(409, "Not possible now", str(exc)) from exc
        except InvalidCursor as exc:
            raise _PageError(422, "Bad page link", f"cursor: {exc}") from exc
        outage.answered()

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail="form too large")
        fields = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"))
        values = {k: v[-1] for k, v in fields.items()}
        csrf.check(request, request.state.offload_user, values.get("csrf"))
        return values

    def confirm(
        request: Request, values: dict[str, str], question: str, back: str
    ) -> HTMLResponse | None:
        """Without script, an action first shows a page that asks; the page's own form
        (or the script's confirm dialog) posts again with ``confirm=yes``."""
        if values.get("confirm") == "yes":
            return None
        return page(request, "confirm.html", question=question, action=request.url.path, back=back)

    def done(request: Request, name: str, **params: Any) -> RedirectResponse:
        target = request.url_for(name, **params).path
        kind = request.url.path.rsplit("/", 1)[-1]
        return RedirectResponse(f"{target}?done={kind}", status.HTTP_303_SEE_OTHER)

    # --- pages --------------------------------------------------------------------------

    async def overview(request: Request, template: str) -> HTMLResponse:
        try:
            async with store_call():
                data = await views.overview(jobs, activity)
        except _PageError as exc:
            return error_page(request, exc)
        return page(request, template, data=data, states=views.STATES)

    @router.get("/", name="offload_dashboard_overview", response_class=HTMLResponse)
    async def overview_page(request: Request) -> HTMLResponse:
        return await overview(request, "overview.html")

    @router.get("/live/overview", name="offload_dashboard_overview_live")
    async def overview_live(request: Request) -> HTMLResponse:
        return await overview(request, "overview_live.html")

    @router.get("/live/changes", name="offload_dashboard_changes")
    async def changes(request: Request) -> JSONResponse:
        """What the pages' script waits on before it fetches a fragment again."""
        no_store = {"Cache-Control": "no-store"}
        try:
            async with store_call():
                change = await wait_for_change(jobs.store, request.query_params.get("since"))
        except _PageError as exc:
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.code == 503 else {}
            return JSONResponse(
                {"detail": exc.message}, status_code=exc.code, headers=no_store | retry
            )
        body = {"token": change.token, "changed": change.changed}
        return JSONResponse(body, headers=no_store)

    @router.get("/jobs", name="offload_dashboard_jobs", response_class=HTMLResponse)
    async def jobs_page(request: Request) -> HTMLResponse:
        params = request.query_params
        query: dict[str, Any] = {
            "state": params.getlist("state"),
            "task": params.get("task", ""),
            "queue": params.get("queue", ""),
            "since": params.get("since", ""),
            "until": params.get("until", ""),
            "q": params.get("q", "").strip(),
        }
        try:
            flt = _filter(query)
            async with store_call():
                found = await _search(jobs, flt, query["q"], params.get("cursor"))
        except _PageError as exc:
            return error_page(request, exc)
        return page(
            request,
            "jobs.html",
            query=query,
            listed=views.listed(found),
            next_cursor=found.next_cursor,
            states=views.STATES,
            tasks=sorted(jobs.tasks),
            ranges=list(RANGES),
            now=datetime.now(UTC).timestamp(),
        )

    async def job(request: Request, job_id: str, template: str) -> HTMLResponse:
        try:
            async with store_call():
                detail = await views.job_detail(jobs, job_id, log_url)
        except _PageError as exc:
            return error_page(request, exc)
        return page(request, template, job=detail)

    @router.get("/jobs/{job_id}", name="offload_dashboard_job", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: str) -> HTMLResponse:
        return await job(request, job_id, "job.html")

    @router.get("/live/jobs/{job_id}", name="offload_dashboard_job_live")
    async def job_live(request: Request, job_id: str) -> HTMLResponse:
        return await job(request, job_id, "job_live.html")

    @router.post("/jobs/{job_id}/{action}", name="offload_dashboard_job_action")
    async def job_action(request: Request, job_id: str, action: str) -> Response:
        if action not in JOB_ACTIONS:
            return error_page(request, _PageError(404, "Not found", f"no action {action!r}"))
        values = await form(request)
        back = request.url_for("offload_dashboard_job", job_id=job_id).path
        asked = confirm(request, values, f"{action.capitalize()} job {job_id}?", back)
        if asked is not None:
            return asked
        user = request.state.offload_user
        try:
            async with store_call():
                if action == "retry":
                    await admin.retry_job(jobs.store, job_id, actor=user)
                elif action == "cancel":
                    await admin.cancel_job(jobs.store, job_id, actor=user)
                else:
                    await admin.delete_job(jobs.store, job_id, actor=user)
        except _PageError as exc:
            return error_page(request, exc)
        if action == "delete":
            return done(request, "offload_dashboard_jobs")
        return done(request, "offload_dashboard_job", job_id=job_id)

    @router.post("/tasks/{task}/retry-failed", name="offload_dashboard_retry_failed")
    async def retry_failed(request: Request, task: str) -> Response:
        values = await form(request)
        back = request.url_for("offload_dashboard_jobs").path
        asked = confirm(request, values, f"Retry every failed job of {task}?", back)
        if asked is not None:
            return asked
        flt = JobFilter(states=(JobState.FAILED,), tasks=(task,))
        try:
            async with store_call():
                outcome = await admin.bulk_action(
                    jobs.store, "retry", flt, actor=request.state.offload_user
                )
        except _PageError as exc:
            return error_page(request, exc)
        target = request.url_for("offload_dashboard_jobs").path
        query = urllib.parse.urlencode(
            {"done": "retry-failed", "task": task, "retried": outcome.changed}
        )
        return RedirectResponse(f"{target}?{query}", status.HTTP_303_SEE_OTHER)

    @router.get("/schedules", name="offload_dashboard_schedules", response_class=HTMLResponse)
    async def schedules_page(request: Request) -> HTMLResponse:
        try:
            async with store_call():
                rows = await views.schedule_rows(jobs)
                now = await jobs.store.now()
        except _PageError as exc:
            return error_page(request, exc)
        return page(request, "schedules.html", rows=rows, now=now)

    @router.post("/schedules/{name}/{change}", name="offload_dashboard_schedule_action")
    async def schedule_action(request: Request, name: str, change: str) -> Response:
        if change not in ("pause", "resume"):
            return error_page(request, _PageError(404, "Not found", f"no action {change!r}"))
        values = await form(request)
        back = request.url_for("offload_dashboard_schedules").path
        asked = confirm(request, values, f"{change.capitalize()} schedule {name}?", back)
        if asked is not None:
            return asked
        try:
            async with store_call():
                await admin.set_paused(jobs, name, change == "pause")
        except _PageError as exc:
            return error_page(request, exc)
        log.info(
            f"schedule {change}d from the dashboard",
            extra={
                "action": f"dashboard.schedule_{change}",
                "schedule": name,
                "actor": request.state.offload_user,
            },
        )
        return done(request, "offload_dashboard_schedules")

    @router.get("/mail", name="offload_dashboard_mail", response_class=HTMLResponse)
    async def mail_page(request: Request) -> HTMLResponse:
        problem = None
        found: list[Shown] = []
        if mail is not None:
            try:
                found = await mail.messages()
            except MailUnavailable as exc:
                problem = str(exc)
        return page(request, "mail.html", messages=found, problem=problem)

    async def one_mail(message_id: str) -> Shown:
        if mail is None:
            raise _PageError(404, "No mail sink", "this dashboard was started without one")
        try:
            found = await mail.get(message_id)
        except MailUnavailable as exc:
            raise _PageError(503, "Mail sink unavailable", str(exc)) from exc
        if found is None:
            raise _PageError(404, "Not found", f"no captured message {message_id}")
        return found

    @router.get("/mail/{message_id}", name="offload_dashboard_message")
    async def message_page(request: Request, message_id: str) -> HTMLResponse:
        try:
            shown = await one_mail(message_id)
        except _PageError as exc:
            return error_page(request, exc)
        return page(request, "message.html", shown=shown)

    @router.get("/mail/{message_id}/html", name="offload_dashboard_message_html")
    async def message_html(request: Request, message_id: str) -> Response:
        try:
            shown = await one_mail(message_id)
        except _PageError as exc:
            return error_page(request, exc)
        return HTMLResponse(shown.message.html or "", headers=mail_html_headers())

    @router.get("/mail/{message_id}/attachments/{index}", name="offload_dashboard_attachment")
    async def attachment(request: Request, message_id: str, index: int) -> Response:
        try:
            shown = await one_mail(message_id)
            if not 0 <= index < len(shown.message.attachments):
                raise _PageError(404, "Not found", f"no attachment {index}")
        except _PageError as exc:
            return error_page(request, exc)
        part = shown.message.attachments[index]
        name = urllib.parse.quote(part.filename or f"attachment-{index}")
        # Always a download: an attached HTML file must not run as a dashboard page.
        return Response(
            part.content,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"},
        )

    @router.get("/static/{name}", name="offload_dashboard_static")
    async def static_file(name: str) -> Response:
        if name not in static:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="not found")
        content, kind = static[name]
        return Response(
            content, media_type=kind, headers={"Cache-Control": "private, max-age=3600"}
        )

    return router


# The "since" choices of the filter form, as seconds before now.
RANGES = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800}


def _when(text: str, field: str) -> float | None:
    """A time bound from the filter form: one of ``RANGES`` (that long ago), or a date and
    time (UTC, as the pages show times)."""
    text = text.strip()
    if not text:
        return None
    if text in RANGES:
        return datetime.now(UTC).timestamp() - RANGES[text]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _PageError(
            422,
            "Bad filter",
            f"{field}: {text!r} is not a time; write it as 2026-12-07T09:30 (UTC) or pick "
            f"one of {', '.join(RANGES)}",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _filter(query: dict[str, Any]) -> JobFilter:
    states = []
    for name in query["state"]:
        try:
            states.append(JobState(name))
        except ValueError:
            known = ", ".join(s.value for s in JobState)
            raise _PageError(422, "Bad filter", f"state: {name!r} is not one of {known}") from None
    return JobFilter(
        states=tuple(states),
        tasks=(query["task"],) if query["task"] else (),
        queues=(query["queue"],) if query["queue"] else (),
        enqueued_after=_when(query["since"], "since"),
        enqueued_before=_when(query["until"], "until"),
    )


async def _search(jobs: Offload, flt: JobFilter, q: str, cursor: str | None) -> Page:
    """The search box takes a job id (that job alone) or an idempotency key."""
    if not q:
        return await admin.list_jobs(jobs.store, flt, PAGE_SIZE, cursor)
    try:
        record = await admin.get_job(jobs.store, q)
    except JobNotFound:
        record = None
    if record is not None:
        return Page([record], None)
    return await admin.list_jobs(jobs.store, dataclasses.replace(flt, key=q), PAGE_SIZE, cursor)
