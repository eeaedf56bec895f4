"""``RequestLogMiddleware``: one line per request, a request id in and out."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from offload.fastapi import RequestLogMiddleware
from tests.conftest import LogLines


def build() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestLogMiddleware)
    inner = APIRouter(prefix="/users")

    @inner.get("/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    sub = FastAPI()

    @sub.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        return {"item": item}

    app.include_router(inner, prefix="/v1")
    app.mount("/sub", sub)
    return app


async def call(
    path: str, headers: dict[str, str] | dict[bytes, bytes] | None = None
) -> httpx.Response:
    # raise_app_exceptions=False: answer a raising endpoint with the 500 a server would send.
    transport = httpx.ASGITransport(app=build(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path, headers=headers)


def request_line(lines: list[dict[str, Any]]) -> dict[str, Any]:
    (line,) = [line for line in lines if line.get("action") == "http.request"]
    return line


class TestRequestId:
    async def test_valid_header_is_echoed_and_logged(self, json_logs: LogLines) -> None:
        """A valid X-Request-ID is kept: returned in the response and logged."""
        rid = "Abc-123_x.y:z"
        response = await call("/v1/users/7", {"X-Request-ID": rid})
        assert rid == response.headers["x-request-id"]
        assert rid == request_line(json_logs())["request_id"]

    @pytest.mark.parametrize(
        "bad", ["", "has space", "x" * 129, "semi;colon", 'quote"', "é-accent".encode(), "a\tb"]
    )
    async def test_invalid_header_is_replaced(self, json_logs: LogLines, bad: str | bytes) -> None:
        """An id outside 1-128 of [A-Za-z0-9._:-] is replaced by a generated one."""
        value = bad if isinstance(bad, bytes) else bad.encode()
        response = await call("/v1/users/7", {b"X-Request-ID": value})
        rid = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert rid == request_line(json_logs())["request_id"]

    async def test_missing_header_gets_a_generated_id(self, json_logs: LogLines) -> None:
        """Without the header each request gets its own fresh id."""
        first = (await call("/v1/users/1")).headers["x-request-id"]
        second = (await call("/v1/users/1")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", first)
        assert first != second


class TestRequestLine:
    async def test_route_template_and_fields(self, json_logs: LogLines) -> None:
        """The line names the route template, not the concrete path, for grouping."""
        await call("/v1/users/7?password=hunter2")
        line = request_line(json_logs())
        assert {
            "method": "GET",
            "path": "/v1/users/7",
            "route": "/v1/users/{user_id}",
            "status": 200,
            "client": "127.0.0.1",
            "level": "info",
        }.items() <= line.items()
        assert "hunter2" not in str(line)  # the query string is never logged

    async def test_route_template_inside_a_mount(self, json_logs: LogLines) -> None:
        """A mounted app's route template includes the mount path."""
        await call("/sub/items/abc")
        assert "/sub/items/{item}" == request_line(json_logs())["route"]

    async def test_unmatched_path_has_no_route(self, json_logs: LogLines) -> None:
        response = await call("/nowhere")
        line = request_line(json_logs())
        assert (404, 404, None) == (response.status_code, line["status"], line["route"])

    async def test_raising_endpoint_is_logged_as_500(self, json_logs: LogLines) -> None:
        """An endpoint that raises is logged once, at error level, with status 500 and the
        error; the exception goes on to the server's error handler, which answers 500."""
        response = await call("/boom", {"X-Request-ID": "req-boom"})
        assert 500 == response.status_code
        line = request_line(json_logs())
        assert {
            "status": 500,
            "route": "/boom",
            "level": "error",
            "request_id": "req-boom",
            "error": "RuntimeError: kaput",
        }.items() <= line.items()

    async def test_valid_traceparent_is_bound_for_jobs(self) -> None:
        """A valid W3C traceparent is bound alongside the request id; a malformed one is not."""
        from offload import correlation

        seen: list[dict[str, Any]] = []

        async def endpoint(scope: Any, receive: Any, send: Any) -> None:
            seen.append(dict(correlation.current()))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        transport = httpx.ASGITransport(app=RequestLogMiddleware(endpoint))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            await client.get("/", headers={"traceparent": tp, "X-Request-ID": "r1"})
            await client.get("/", headers={"traceparent": "00-zz-01", "X-Request-ID": "r2"})
        assert [{"request_id": "r1", "traceparent": tp}, {"request_id": "r2"}] == seen
        assert {} == dict(correlation.current())
