"""The jobs HTTP API: status, results, listing, cancel and retry, behind an auth dependency."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError

from offload import admin
from offload.errors import (
    ConfigError,
    InvalidCursor,
    InvalidTransition,
    JobNotFound,
    StoreUnavailable,
    UnknownSchedule,
)
from offload.fastapi.background import RETRY_AFTER_SECONDS, UNAVAILABLE_RESPONSE
from offload.fastapi.outage import outage_of
from offload.fastapi.schemas import (
    Detail,
    JobOut,
    JobPageOut,
    ScheduleListOut,
    ScheduleOut,
    StepOut,
)
from offload.records import JobState
from offload.stores.base import JobFilter, Workflows

if TYPE_CHECKING:
    from offload.app import Offload

__all__ = ["jobs_router"]

log = logging.getLogger("offload.fastapi")

DEFAULT_PAGE = 50
# Large enough for a dashboard table, small enough that one request stays one cheap query.
MAX_PAGE = 500
# Cursors are URL-safe base64; checking the alphabet up front names the field in the 422.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"

# Module level, not inside jobs_router: FastAPI resolves these annotations by name.
JobId = Annotated[str, Path(description="the job id returned at enqueue", max_length=200)]
ScheduleName = Annotated[str, Path(description="the schedule's name", max_length=200)]

_NOT_FOUND = {"model": Detail, "description": "no job with that id (it may have been purged)"}
_UNAUTHORIZED = {"model": Detail, "description": "the auth dependency refused the credentials"}


def jobs_router(
    jobs: Offload,
    *,
    auth: Callable[..., Any] | None = None,
    allow_anonymous: bool = False,
    prefix: str = "",
    tags: list[str] | None = None,
) -> APIRouter:
    """Build the jobs API for ``jobs``; every route depends on ``auth``.

    ``auth`` is an ordinary FastAPI dependency that raises (typically 401) for a caller who
    may not see jobs. Job results, errors and tracebacks are sensitive, so building the router
    without one is refused unless ``allow_anonymous=True`` says it is meant.

    With ``prefix="/jobs"`` the listing is served at ``/jobs`` itself; included under an outer
    prefix instead, it is at ``<prefix>/``.

    Every route's OpenAPI entry lists 401 (with ``auth``) and 503 besides its own answers; an
    ``auth`` that answers otherwise (403, say) is documented with
    ``app.include_router(router, responses={403: ...})``.
    """
    if auth is None and not allow_anonymous:
        raise ConfigError(
            "jobs_router() needs auth=<a FastAPI dependency that checks credentials>, since "
            "job results and errors may be sensitive; pass allow_anonymous=True to serve "
            "them to anyone on purpose"
        )
    dependencies = []
    responses: dict[int | str, dict[str, Any]] = {503: UNAVAILABLE_RESPONSE}
    if auth is not None:
        dependencies.append(Depends(auth))
        responses[401] = _UNAUTHORIZED
    else:
        log.warning(
            "the jobs API is served without authentication (allow_anonymous=True)",
            extra={"action": "fastapi.router_anonymous"},
        )
    router = APIRouter(
        prefix=prefix,
        tags=list(tags) if tags is not None else ["jobs"],
        dependencies=dependencies,
        responses=responses,
    )

    @router.get(
        "" if prefix else "/",
        name="offload_list_jobs",
        response_model=JobPageOut,
        summary="List jobs, newest first",
    )
    async def list_jobs(
        state: Annotated[list[JobState] | None, Query(description="repeatable")] = None,
        task: Annotated[list[str] | None, Query(description="task name; repeatable")] = None,
        queue: Annotated[list[str] | None, Query(description="repeatable")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
        cursor: Annotated[
            str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of a page")
        ] = None,
    ) -> JobPageOut:
        flt = JobFilter(
            states=tuple(state or ()), tasks=tuple(task or ()), queues=tuple(queue or ())
        )
        try:
            async with _operation(jobs):
                page = await admin.list_jobs(jobs.store, flt, limit, cursor)
        except InvalidCursor as exc:
            # Only the cursor is not checked before this point.
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("query", "cursor"),
                        "msg": f"not a cursor from this API: {exc}",
                        "input": cursor,
                    }
                ]
            ) from exc
        return JobPageOut(
            items=[JobOut.from_record(r) for r in page.jobs], next_cursor=page.next_cursor
        )

    # Before "/{job_id}": otherwise GET /schedules would be read as a job id.
    _schedule_routes(router, jobs)

    @router.get(
        "/{job_id}",
        name="offload_get_job",
        response_model=JobOut,
        summary="A job's state, progress, result or error",
        responses={404: _NOT_FOUND},
    )
    async def get_job(job_id: JobId) -> JobOut:
        async with _operation(jobs):
            record = await admin.get_job(jobs.store, job_id)
            out = JobOut.from_record(record)
            store = jobs.store
            if record.meta.get("workflow") == record.id and isinstance(store, Workflows):
                out.steps = [StepOut.from_record(step) for step in await store.steps(record.id)]
            return out

    @router.post(
        "/{job_id}/cancel",
        name="offload_cancel_job",
        response_model=JobOut,
        summary="Cancel a queued job, or ask the worker to stop a running one",
        responses={
            404: _NOT_FOUND,
            409: {"model": Detail, "description": "the job has already finished"},
        },
    )
    async def cancel_job(job_id: JobId) -> JobOut:
        async with _operation(jobs):
            return JobOut.from_record(await admin.cancel_job(jobs.store, job_id))

    @router.post(
        "/{job_id}/retry",
        name="offload_retry_job",
        response_model=JobOut,
        summary="Queue a failed or cancelled job again, with a fresh attempt budget",
        responses={
            404: _NOT_FOUND,
            409: {"model": Detail, "description": "the job is not failed or cancelled"},
        },
    )
    async def retry_job(job_id: JobId) -> JobOut:
        async with _operation(jobs):
            return JobOut.from_record(await admin.retry_job(jobs.store, job_id))

    @router.delete(
        "/{job_id}",
        name="offload_delete_job",
        status_code=204,
        summary="Delete a finished or queued job (a queued one is cancelled first)",
        responses={
            404: _NOT_FOUND,
            409: {"model": Detail, "description": "the job is running; cancel it first"},
        },
    )
    async def delete_job(job_id: JobId) -> None:
        async with _operation(jobs):
            await admin.delete_job(jobs.store, job_id)

    return router


def _schedule_routes(router: APIRouter, jobs: Offload) -> None:
    not_found = {"model": Detail, "description": "no schedule with that name"}

    @router.get(
        "/schedules",
        name="offload_list_schedules",
        response_model=ScheduleListOut,
        summary="The app's schedules, whether paused, and their next fire times",
    )
    async def list_schedules() -> ScheduleListOut:
        async with _operation(jobs):
            found = await admin.statuses(jobs)
        return ScheduleListOut(items=[ScheduleOut.from_status(s) for s in found])

    async def change(name: str, paused: bool) -> ScheduleOut:
        async with _operation(jobs):
            return ScheduleOut.from_status(await admin.set_paused(jobs, name, paused))

    @router.post(
        "/schedules/{name}/pause",
        name="offload_pause_schedule",
        response_model=ScheduleOut,
        summary="Stop firing a schedule on every instance until resumed",
        responses={404: not_found},
    )
    async def pause_schedule(name: ScheduleName) -> ScheduleOut:
        return await change(name, True)

    @router.post(
        "/schedules/{name}/resume",
        name="offload_resume_schedule",
        response_model=ScheduleOut,
        summary="Fire a paused schedule again from its next slot (missed slots stay skipped)",
        responses={404: not_found},
    )
    async def resume_schedule(name: ScheduleName) -> ScheduleOut:
        return await change(name, False)


@contextlib.asynccontextmanager
async def _operation(jobs: Offload) -> AsyncIterator[None]:
    """Open the store, then answer the operator errors of ``offload.admin`` with their status
    codes and their own words. An outage is the store's state, not a bug in the API: 503,
    never 500, logged once per outage rather than a traceback per request."""
    outage = outage_of(jobs)
    try:
        await jobs.open()
        yield
    except (StoreUnavailable, OSError) as exc:
        outage.failed(exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the job store is unavailable; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from exc
    except (JobNotFound, UnknownSchedule) as exc:
        outage.answered()
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except InvalidTransition as exc:
        outage.answered()
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    except InvalidCursor:
        outage.answered()
        raise
    outage.answered()
