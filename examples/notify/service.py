"""What every route of the service needs: the settings, the jobs, the tasks, the token check,
and one way to store jobs from an endpoint (413 past the payload limit, 503 with
``Retry-After`` when the store is down: never a 500, never a job silently dropped)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from examples.notify.settings import Settings
from examples.notify.tasks import Tasks
from offload import Job, Offload, PayloadTooLarge, Prepared, StoreUnavailable
from offload.canvas import Canvas
from offload.fastapi import ENQUEUE_RESPONSES, Detail

RETRY_AFTER = 5
bearer = HTTPBearer(auto_error=False)

# Every answer a job-creating route can give besides its own: a client generated from the
# schema knows them all.
JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Detail, "description": "the body could not be read (not JSON, bad form)"},
    401: {"model": Detail, "description": "no or a wrong API token"},
    **ENQUEUE_RESPONSES,
}
TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "no or a wrong API token"},
}
# A route that reads a store: either may be down for a moment.
READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    **TOKEN_RESPONSES,
    503: {"model": Detail, "description": "the job store or the database is unavailable"},
}


@dataclass
class Service:
    settings: Settings
    jobs: Offload
    tasks: Tasks
    token: str

    def require_token(self) -> Any:
        """The dependency that guards every non-public route. ``compare_digest`` takes the
        same time whatever the guess, so the token cannot be found byte by byte."""
        expected = self.token.encode()

        def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> None:
            given = b"" if credentials is None else credentials.credentials.encode()
            if not secrets.compare_digest(given, expected):
                raise HTTPException(
                    status.HTTP_401_UNAUTHORIZED,
                    detail="send the API token as 'Authorization: Bearer <NOTIFY_API_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )

        return check

    async def enqueue(self, prepared: Iterable[Prepared[Any]]) -> list[Job[Any]]:
        """Store the jobs in one round trip, or answer as ``Background.add_task`` does."""
        try:
            return await self.jobs.enqueue_many(list(prepared))
        except PayloadTooLarge as exc:
            raise HTTPException(413, detail=f"the job would be too large: {exc.size:,} bytes")
        except (StoreUnavailable, OSError) as exc:
            raise unavailable("the job store", exc) from exc

    async def enqueue_workflow(self, workflow: Canvas, key: str) -> Job[Any]:
        """``enqueue`` for a workflow: every step stored in one write, or none."""
        try:
            return await workflow.enqueue(key=key)
        except PayloadTooLarge as exc:
            raise HTTPException(413, detail=f"the job would be too large: {exc.size:,} bytes")
        except (StoreUnavailable, OSError) as exc:
            raise unavailable("the job store", exc) from exc

    async def enqueue_in(
        self, connection: Any, prepared: Iterable[Prepared[Any]]
    ) -> list[Job[Any]]:
        """``enqueue`` inside the caller's open transaction (PostgreSQL on both sides)."""
        try:
            return await self.jobs.enqueue_many(list(prepared), connection=connection)
        except (StoreUnavailable, OSError) as exc:
            raise unavailable("the job store", exc) from exc


def unavailable(what: str, exc: BaseException) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"{what} is unavailable, so nothing was accepted; retry the request later",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def invalid(field: str, message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the field, for checks a model cannot make."""
    return RequestValidationError(
        [{"loc": ("body", field), "msg": message, "type": kind, "input": None}]
    )
