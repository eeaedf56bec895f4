"""``BodySizeLimitMiddleware``: refuse request bodies over a size with 413, before reading them.

FastAPI reads a JSON body whole before validating it, so without a limit a client can make
the server hold (and parse) as much as it cares to send. A pure ASGI middleware sees the body
as the server streams it in: a ``Content-Length`` over the limit is refused before a byte of
the body is read, and a body without one (chunked) is counted as it arrives and refused as
soon as it passes the limit, so the server never holds more than the limit plus one chunk.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

from starlette.exceptions import HTTPException

__all__ = ["DEFAULT_MAX_BODY_SIZE", "BodySizeLimitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Far more than any form or JSON document an API takes by hand, far less than what would
# strain a server's memory when many requests arrive at once. Uploads take a higher limit on
# purpose (or stream to storage past this middleware).
DEFAULT_MAX_BODY_SIZE: Final = 1 << 20


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit.

    An ``HTTPException`` so that FastAPI, which turns other errors met while reading a body
    into a 400, passes it on to the app's exception handlers and answers 413 in the app's own
    error format; the middleware answers it itself if nothing inside did."""

    def __init__(self, limit: int) -> None:
        # The rest of the body is never read: the connection cannot carry another request.
        super().__init__(413, detail=_detail(limit), headers={"Connection": "close"})


class BodySizeLimitMiddleware:
    """Answers ``413 Content Too Large`` to a request whose body is over ``max_body_size``
    bytes (default 1 MiB), as ``{"detail": "..."}`` naming the limit.

    A declared ``Content-Length`` over the limit is refused without calling the app. A body
    without one is counted chunk by chunk as the app reads it, and the read that passes the
    limit raises ``BodyTooLarge`` (a 413 ``HTTPException``) instead of returning the chunk.
    Add it with ``app.add_middleware(BodySizeLimitMiddleware, max_body_size=...)``.

    ``paths`` gives routes that take more (uploads): ``{"/files": 50 << 20}`` applies to
    ``/files`` and everything under it, the longest matching prefix winning.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        paths: Mapping[str, int] | None = None,
    ) -> None:
        _check_size("max_body_size", max_body_size)
        self.app = app
        self.max_body_size = max_body_size
        self.paths: list[tuple[str, int]] = []
        for prefix, size in (paths or {}).items():
            if not prefix.startswith("/"):
                raise ValueError(f"paths: {prefix!r} must start with '/'")
            _check_size(f"paths[{prefix!r}]", size)
            self.paths.append((prefix.rstrip("/"), size))
        self.paths.sort(key=lambda item: len(item[0]), reverse=True)

    def limit_for(self, path: str) -> int:
        for prefix, size in self.paths:
            if path == prefix or path.startswith(prefix + "/"):
                return size
        return self.max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope["headers"]:
            if name == b"content-length":
                # A malformed length is the server's to refuse; here the body is counted.
                if value.isdigit() and int(value) > limit:
                    await _refuse(send, limit)
                    return
                break
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:  # too late for a 413; let the server end the response
                raise
            await _refuse(send, limit)


def _check_size(what: str, size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{what} is a number of bytes, got {size!r}")
    if size < 0:
        raise ValueError(f"{what} must not be negative, got {size}")


def _detail(limit: int) -> str:
    return f"the request body is over the limit of {limit:,} bytes; send less data"


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": _detail(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("latin-1")),
                # The rest of the body is never read: the connection cannot carry another
                # request after it.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
