"""A job store that refuses connections: every endpoint that needs it answers 503 with
Retry-After, and the log holds one line when the outage begins and one when it ends, not a
traceback per request."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from offload import Offload
from offload.fastapi import ENQUEUE_RESPONSES, Background, jobs_router
from offload.fastapi.outage import StoreOutage
from tests.stores.conftest import OwnRedis, _free_port, unstarted_redis

TOKEN = {"Authorization": "Bearer t"}
# Each request must be answered well within this; the store's own timeout is 5 s.
PROMPT = 2.0
REQUESTS = 4


def service(url: str) -> FastAPI:
    """An app of the shape the adapter is for: an endpoint enqueuing a job, and the jobs API.
    No lifespan, so the store is opened by the first request that needs it."""
    jobs = Offload(url, embedded_worker=False)

    @jobs.task(name="tests.greet")
    async def greet(name: str) -> str:
        return f"hello {name}"

    def auth() -> None:
        pass

    app = FastAPI()
    app.include_router(jobs_router(jobs, auth=auth, prefix="/jobs"))

    @app.post("/greet", status_code=202, responses=ENQUEUE_RESPONSES)
    async def post_greet(background: Background) -> dict[str, str]:
        job = await background.add_task(greet, "ada")
        return {"job_id": job.id}

    return app


@pytest.fixture
async def client_of() -> AsyncIterator[object]:
    clients: list[httpx.AsyncClient] = []

    def make(url: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(service(url))
        client = httpx.AsyncClient(transport=transport, base_url="http://test", headers=TOKEN)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of the test's own, not yet started: its port refuses connections."""
    server = unstarted_redis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def requests_in_outage(client: httpx.AsyncClient) -> list[tuple[int, str | None, float]]:
    """Status, Retry-After and seconds taken of each request, alternating the endpoints."""
    answers = []
    for n in range(REQUESTS):
        began = time.monotonic()
        if n % 3 == 0:
            response = await client.post("/greet")
        elif n % 3 == 1:
            response = await client.get("/jobs/0123456789abcdef")
        else:
            response = await client.get("/jobs")
        answers.append(
            (response.status_code, response.headers.get("retry-after"), time.monotonic() - began)
        )
    return answers


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What reached the log at INFO and above: the outage's lines and anything else."""
    return [r for r in caplog.records if r.levelno >= logging.INFO and r.name != "httpx"]


async def test_a_store_refusing_connections_answers_503_and_logs_one_line(
    client_of: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis URL on a closed port, from the app's start on. (op_timeout=1: each request
    tries to open the store, which takes the whole timeout; see the test below.)"""
    url = f"redis://127.0.0.1:{_free_port()}/0?prefix=outage&op_timeout=1"
    client = client_of(url)  # type: ignore[operator]
    caplog.set_level(logging.DEBUG)
    answers = await requests_in_outage(client)
    assert [(503, "5")] * REQUESTS == [(status, after) for status, after, _ in answers]
    [line] = outage_lines(caplog)
    assert logging.WARNING == line.levelno
    assert "job store unavailable" in line.getMessage()
    assert line.error.startswith("StoreUnavailable: ")  # type: ignore[attr-defined]
    assert line.exc_info is None
    assert line.exc_text is None
    # The later failures are counted, at DEBUG, without a traceback.
    quiet = [r for r in caplog.records if r.getMessage() == "job store still unavailable"]
    assert list(range(2, REQUESTS + 1)) == [r.refused for r in quiet]  # type: ignore[attr-defined]
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_store_never_reached_answers_each_request_promptly(client_of: object) -> None:
    client = client_of(f"redis://127.0.0.1:{_free_port()}/0?prefix=outage")  # type: ignore[operator]
    for _ in range(3):
        began = time.monotonic()
        response = await client.post("/greet")
        took = time.monotonic() - began
        assert 503 == response.status_code
        assert took < PROMPT, f"answered 503 after {took:.2f} s"


async def test_an_outage_of_a_running_store_logs_when_it_begins_and_when_it_ends(
    client_of: object, redis_server: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """The store opened and answering, then killed (answers 503 at once), then back."""
    redis_server.start()
    client = client_of(redis_server.url)  # type: ignore[operator]
    assert 202 == (await client.post("/greet")).status_code
    caplog.set_level(logging.INFO)
    caplog.clear()
    redis_server.crash()

    answers = await requests_in_outage(client)
    assert [(503, "5")] * REQUESTS == [(status, after) for status, after, _ in answers]
    slowest = max(seconds for _, _, seconds in answers)
    assert slowest < PROMPT, f"slowest answer took {slowest:.2f} s"

    redis_server.start()
    response = await client.post("/greet")
    assert 202 == response.status_code, response.text
    assert 200 == (await client.get(f"/jobs/{response.json()['job_id']}")).status_code
    down, up = outage_lines(caplog)
    assert (logging.WARNING, "fastapi.store_unavailable") == (down.levelno, down.action)  # type: ignore[attr-defined]
    assert (logging.INFO, "fastapi.store_recovered") == (up.levelno, up.action)  # type: ignore[attr-defined]
    assert REQUESTS == up.refused  # type: ignore[attr-defined]
    assert all(r.exc_info is None for r in caplog.records)


class Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestStoreOutage:
    def test_each_outage_is_one_warning_and_one_recovery(self) -> None:
        records: list[logging.LogRecord] = []
        logger = logging.getLogger("tests.outage")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handler = Collect(records)
        logger.addHandler(handler)
        try:
            outage = StoreOutage(logger)
            outage.answered()  # no outage: nothing to say
            for _ in range(2):
                for _ in range(3):
                    outage.failed(ConnectionRefusedError("refused"), task="t")
                outage.answered()
                outage.answered()
        finally:
            logger.removeHandler(handler)
        seen = [(r.levelname, r.getMessage(), r.refused) for r in records]  # type: ignore[attr-defined]
        warning = "job store unavailable; requests that need it answer 503 until it is back"
        one = [
            ("WARNING", warning, 1),
            ("DEBUG", "job store still unavailable", 2),
            ("DEBUG", "job store still unavailable", 3),
            ("INFO", "job store available again", 3),
        ]
        assert one * 2 == seen
        assert "ConnectionRefusedError: refused" == records[0].error  # type: ignore[attr-defined]
