"""``BodySizeLimitMiddleware``: bodies over the limit answered 413 before they are read whole.

In process through the ASGI interface, for what the middleware decides and for a job over
the payload limit. What a server process holds while a client sends it 100 MB is tested
against the reference service under uvicorn, in tests/acceptance/test_body_limit_service.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from offload import Offload
from offload.fastapi import (
    DEFAULT_MAX_BODY_SIZE,
    ENQUEUE_RESPONSES,
    Background,
    BodySizeLimitMiddleware,
)
from offload.stores.base import JobFilter

LIMIT = 1000
CHUNK = 100
JSON = {"content-type": "application/json"}
Message = MutableMapping[str, Any]


class Note(BaseModel):
    text: str


def limited_app(calls: list[str]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodySizeLimitMiddleware, max_body_size=LIMIT)

    @app.post("/notes")
    async def add_note(note: Note) -> dict[str, int]:
        calls.append(note.text)
        return {"length": len(note.text)}

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        calls.append("ping")
        return {"ping": "pong"}

    return app


def note_of(size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes."""
    body = json.dumps({"text": ""}).encode()
    return json.dumps({"text": "x" * (size - len(body))}).encode()


class Chunks:
    """A streamed body (no Content-Length: sent chunked) that counts what was pulled of it."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), CHUNK):
            self.pulled += min(CHUNK, len(self.body) - start)
            yield self.body[start : start + CHUNK]


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
async def client(calls: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(limited_app(calls))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


class TestDeclaredLength:
    async def test_a_body_at_the_limit_is_accepted(
        self, client: httpx.AsyncClient, calls: list[str]
    ) -> None:
        response = await client.post("/notes", content=note_of(LIMIT), headers=JSON)
        assert (200, 1) == (response.status_code, len(calls))

    async def test_a_length_over_the_limit_is_refused_without_calling_the_app(
        self, client: httpx.AsyncClient, calls: list[str]
    ) -> None:
        """413 in the app's error format, naming the limit, and the connection is not kept:
        the body it did not read would otherwise be taken for the next request."""
        response = await client.post("/notes", content=note_of(LIMIT + 1), headers=JSON)
        assert 413 == response.status_code
        assert {
            "detail": "the request body is over the limit of 1,000 bytes; send less data"
        } == response.json()
        assert "close" == response.headers["connection"]
        assert [] == calls

    async def test_the_length_is_checked_on_every_method(
        self, client: httpx.AsyncClient, calls: list[str]
    ) -> None:
        response = await client.request("GET", "/ping", content=b"x" * (LIMIT + 1))
        assert (413, []) == (response.status_code, calls)


class TestStreamedBody:
    async def test_a_chunked_body_within_the_limit_is_accepted(
        self, client: httpx.AsyncClient, calls: list[str]
    ) -> None:
        body = Chunks(note_of(LIMIT))
        response = await client.post("/notes", content=body, headers=JSON)
        assert (200, LIMIT, 1) == (response.status_code, body.pulled, len(calls))

    async def test_a_chunked_body_is_refused_at_the_chunk_that_passes_the_limit(
        self, client: httpx.AsyncClient, calls: list[str]
    ) -> None:
        """Of a 100 kB body, no more is read than the limit and one chunk: the rest is never
        pulled from the client."""
        body = Chunks(note_of(100 * LIMIT))
        response = await client.post("/notes", content=body, headers=JSON)
        assert 413 == response.status_code
        assert "close" == response.headers["connection"]
        assert "1,000 bytes" in response.json()["detail"]
        assert LIMIT < body.pulled <= LIMIT + CHUNK
        assert [] == calls

    async def test_an_app_reading_the_body_itself_gets_the_413_from_the_middleware(
        self,
    ) -> None:
        """A plain ASGI app lets the error out of ``receive`` unhandled; the middleware
        answers it, since nothing was sent yet."""

        async def reader(scope: Message, receive: Any, send: Any) -> None:
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        app = BodySizeLimitMiddleware(reader, max_body_size=LIMIT)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/", content=Chunks(b"x" * (10 * LIMIT)))
        assert (413, "close") == (response.status_code, response.headers["connection"])
        assert "1,000 bytes" in response.json()["detail"]

    async def test_past_the_start_of_a_response_the_error_goes_to_the_server(self) -> None:
        """A 413 can no longer be sent once a response has begun: the server ends it."""

        async def streaming(scope: Message, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while (await receive()).get("more_body"):
                pass

        app = BodySizeLimitMiddleware(streaming, max_body_size=LIMIT)
        sent: list[Message] = []
        chunks = iter([b"x" * LIMIT, b"x"])

        async def receive() -> Message:
            return {"type": "http.request", "body": next(chunks), "more_body": True}

        async def send(message: Message) -> None:
            sent.append(message)

        with pytest.raises(Exception, match="413") as caught:
            await app({"type": "http", "headers": []}, receive, send)
        assert 413 == getattr(caught.value, "status_code", None)
        assert [200] == [m["status"] for m in sent]


class TestSettings:
    async def test_other_scopes_pass_through(self) -> None:
        seen: list[str] = []

        async def app(scope: Message, receive: Any, send: Any) -> None:
            seen.append(scope["type"])

        async def nothing() -> Message:
            return {}

        async def drop(message: Message) -> None:
            pass

        middleware = BodySizeLimitMiddleware(app, max_body_size=0)
        await middleware({"type": "lifespan"}, nothing, drop)
        await middleware({"type": "websocket", "headers": []}, nothing, drop)
        assert ["lifespan", "websocket"] == seen

    def test_the_default_is_one_mebibyte(self) -> None:
        async def app(scope: Message, receive: Any, send: Any) -> None:
            pass

        assert 1 << 20 == DEFAULT_MAX_BODY_SIZE
        assert DEFAULT_MAX_BODY_SIZE == BodySizeLimitMiddleware(app).max_body_size

    @pytest.mark.parametrize(
        ("value", "error", "words"),
        [
            (-1, ValueError, "must not be negative, got -1"),
            ("1MB", TypeError, "a number of bytes, got '1MB'"),
            (1.5, TypeError, "a number of bytes, got 1.5"),
            (True, TypeError, "a number of bytes, got True"),
        ],
    )
    def test_a_bad_limit_is_refused(self, value: Any, error: type[Exception], words: str) -> None:
        async def app(scope: Message, receive: Any, send: Any) -> None:
            pass

        with pytest.raises(error, match=words):
            BodySizeLimitMiddleware(app, max_body_size=value)


class TestPathLimits:
    """Uploads take a larger limit under their own paths; every other route keeps the
    default."""

    @pytest.fixture
    async def upload_client(self) -> AsyncIterator[httpx.AsyncClient]:
        app = FastAPI()

        @app.post("/files")
        @app.post("/files/{name}")
        @app.post("/filesystem")
        async def take(request: Request) -> dict[str, int]:
            return {"read": len(await request.body())}

        limited = BodySizeLimitMiddleware(app, max_body_size=10, paths={"/files": 100})
        transport = httpx.ASGITransport(limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client

    @pytest.mark.parametrize(
        ("path", "size", "code"),
        [
            ("/files", 100, 200),
            ("/files/a.csv", 100, 200),
            ("/files", 101, 413),
            ("/filesystem", 11, 413),  # a prefix of the name, not of the path: the default
            ("/filesystem", 10, 200),
        ],
    )
    async def test_the_longest_matching_path_sets_the_limit(
        self, upload_client: httpx.AsyncClient, path: str, size: int, code: int
    ) -> None:
        response = await upload_client.post(path, content=b"x" * size)
        assert code == response.status_code, response.text

    async def test_a_streamed_upload_is_counted_against_its_path_limit(
        self, upload_client: httpx.AsyncClient
    ) -> None:
        response = await upload_client.post("/files", content=Chunks(b"x" * 150))
        assert 413 == response.status_code
        assert "100 bytes" in response.json()["detail"]

    @pytest.mark.parametrize(
        ("paths", "error", "words"),
        [
            ({"files": 1}, ValueError, "must start with '/'"),
            ({"/files": -1}, ValueError, r"paths\['/files'\] must not be negative"),
            ({"/files": "50MB"}, TypeError, "a number of bytes, got '50MB'"),
        ],
    )
    def test_a_bad_path_limit_is_refused(
        self, paths: dict[str, Any], error: type[Exception], words: str
    ) -> None:
        async def app(scope: Message, receive: Any, send: Any) -> None:
            pass

        with pytest.raises(error, match=words):
            BodySizeLimitMiddleware(app, paths=paths)


class TestJobPayload:
    """A body within the body limit can still make a job over the payload limit: the client
    hears 413 for it too, and nothing is stored."""

    @pytest.fixture
    async def payload_client(self) -> AsyncIterator[tuple[httpx.AsyncClient, Offload]]:
        jobs = Offload("memory://", embedded_worker=False, max_payload=100)

        @jobs.task(name="tests.keep")
        async def keep(text: str) -> None:
            pass

        app = limited_app([])

        @app.post("/keep", status_code=202, responses=ENQUEUE_RESPONSES)
        async def post_keep(note: Note, background: Background) -> dict[str, str]:
            return {"job_id": (await background.add_task(keep, note.text)).id}

        @app.post("/keep-sync", status_code=202, responses=ENQUEUE_RESPONSES)
        def post_keep_sync(note: Note, background: Background) -> dict[str, str]:
            return {"job_id": background.add_task_sync(keep, note.text).id}

        transport = httpx.ASGITransport(app)
        async with jobs, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, jobs

    @pytest.mark.parametrize("path", ["/keep", "/keep-sync"])
    async def test_a_job_over_the_payload_limit_is_answered_413(
        self,
        payload_client: tuple[httpx.AsyncClient, Offload],
        path: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        client, jobs = payload_client
        caplog.set_level(logging.INFO, logger="offload.fastapi")
        response = await client.post(path, json={"text": "x" * 200})
        assert 413 == response.status_code
        # For the client, the sizes; the server's settings are in the log only.
        assert {
            "detail": "the data in this request makes a job of 213 bytes, over the limit of "
            "100 bytes; send less data"
        } == response.json()
        assert [] == (await jobs.store.list(JobFilter(), 10)).jobs
        [line] = [r for r in caplog.records if r.name == "offload.fastapi"]
        assert "fastapi.payload_too_large" == line.action  # type: ignore[attr-defined]
        assert "Offload(max_payload=...)" in line.error  # type: ignore[attr-defined]
        assert 202 == (await client.post(path, json={"text": "fits"})).status_code
