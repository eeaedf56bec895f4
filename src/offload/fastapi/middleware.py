"""``RequestLogMiddleware``: one log line per request, and a request id that jobs inherit.

A pure ASGI middleware (``BaseHTTPMiddleware`` would run the endpoint in another task, cost a
memory stream per request, and hide the context variables the endpoint sets). It binds the
request id and a valid W3C ``traceparent`` through ``offload.correlation`` for the length of
the request, so every job enqueued meanwhile records them in its meta and every line logged
meanwhile carries them.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from offload import correlation

__all__ = ["REQUEST_ID_PATTERN", "RequestLogMiddleware", "valid_request_id"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("offload.http")

# What a client or proxy may choose as a request id: enough for UUIDs, ULIDs, AWS and
# Cloudflare ray ids, and nothing that could forge a log line or a header (no spaces, quotes,
# line breaks or non-ASCII). Anything else is replaced by a fresh id rather than refused, as a
# bad id is no reason to fail the request.
REQUEST_ID_PATTERN: Final = r"[A-Za-z0-9._:-]{1,128}"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
# W3C trace context: version-traceid-parentid-flags, lower-case hex; all-zero ids are invalid.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def valid_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


class RequestLogMiddleware:
    """Logs method, path, route template, status, duration, client and request id.

    The request id is taken from the ``X-Request-ID`` header when it is valid (1 to 128 of
    ``A-Z a-z 0-9 . _ : -``), else generated (32 hex digits); it is returned in the response
    header of the same name. ``trust_header=False`` always generates one, for services
    reachable by clients who should not choose ids that appear in your logs.

    A request whose endpoint raises is logged with status 500 and the error's type; the
    exception then continues to the server error handler outside this middleware, so that
    500 response does not carry the header.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header: str = "X-Request-ID",
        trust_header: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.header = header
        self._header_key = header.lower().encode("latin-1")
        self.trust_header = trust_header
        self.log = logger or log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id: str | None = None
        traceparent: str | None = None
        header_key = self._header_key
        for name, value in scope["headers"]:
            if name == header_key:
                if self.trust_header:
                    request_id = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        if request_id is None or _REQUEST_ID.fullmatch(request_id) is None:
            request_id = uuid.uuid4().hex
        fields: dict[str, str] = {correlation.REQUEST_ID: request_id}
        if traceparent is not None and _TRACEPARENT.fullmatch(traceparent) is not None:
            fields[correlation.TRACEPARENT] = traceparent
        response_header = (header_key, request_id.encode("latin-1"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(response_header)
                message = {**message, "headers": headers}
            await send(message)

        root_path = scope.get("root_path", "")
        token = correlation.bind(fields)
        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            error = exc
            raise
        finally:
            correlation.reset(token)
            self._log(scope, root_path, status, error, request_id, started)

    def _log(
        self,
        scope: Scope,
        root_path: str,
        status: int,
        error: BaseException | None,
        request_id: str,
        started: float,
    ) -> None:
        if error is not None and not status:
            status = 500  # what the server error handler outside will answer
        level = logging.ERROR if status >= 500 else logging.INFO
        if not self.log.isEnabledFor(level):
            return
        client = scope.get("client")
        extra: dict[str, Any] = {
            "action": "http.request",
            "method": scope["method"],
            "path": scope["path"],
            "route": _route_template(scope, root_path),
            "status": status,
            "duration": time.perf_counter() - started,
            "client": client[0] if client else None,
            "request_id": request_id,
        }
        if error is not None:
            extra["error"] = f"{type(error).__name__}: {error}"
        self.log.log(level, "http request", extra=extra)


def _route_template(scope: Scope, root_path: str) -> str | None:
    """The matched route's path template (``/jobs/{job_id}``), router prefixes and mounts
    included.

    Starlette's router records the route in the scope it was given, and a mount extends
    ``root_path`` by the part of the path it matched. FastAPI versions that keep included
    routers apart record the route's full template in their own scope entry.
    """
    route = scope.get("route")
    if route is None:
        return None
    fastapi_scope = scope.get("fastapi")
    effective = fastapi_scope.get("effective_route_context") if fastapi_scope else None
    path = getattr(effective, "path_format", None)
    if not isinstance(path, str):
        path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    mounted = scope.get("root_path", "")
    prefix = mounted[len(root_path) :] if mounted.startswith(root_path) else ""
    if hasattr(route, "routes"):  # a mounted app that is no router: its mount path is all
        return prefix or path
    return prefix + path
