"""The reference notification service, end to end through its ASGI app and real lifespan."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from offload.email.sink import MailSink

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADA = {"email": "ada@example.com", "name": "Ada Lovelace"}


def fresh_service() -> ModuleType:
    """Import the service anew, so that it reads the environment this test set."""
    sys.modules.pop("examples.notify.app", None)
    return importlib.import_module("examples.notify.app")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> None:
    # The working directory holds no .env, so only what the test sets is read.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OFFLOAD_URL", db_url)
    monkeypatch.setenv("NOTIFY_API_TOKEN", TOKEN)
    # The service would otherwise configure logging for the whole test process.
    monkeypatch.setenv("NOTIFY_LOG", "off")
    for setting in ("HOST", "PORT", "TLS", "SENDER"):
        monkeypatch.delenv(f"OFFLOAD_SMTP_{setting}", raising=False)


@pytest.fixture
async def client(environment: None) -> AsyncIterator[httpx.AsyncClient]:
    service = fresh_service()
    transport = httpx.ASGITransport(service.app)
    async with (
        service.app.router.lifespan_context(service.app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def requested(listing: httpx.Response) -> list[dict[str, Any]]:
    """The listed jobs that requests made: the service's schedules (a stats refresh every
    5 minutes of the wall clock) may add one of theirs while a test runs."""
    return [item for item in listing.json()["items"] if "schedule" not in item["meta"]]


async def until_finished(client: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    """Poll the status URL as a client would, until the job has finished."""
    async with asyncio.timeout(20):
        while True:
            response = await client.get(status_url, headers=AUTH)
            assert 200 == response.status_code, response.text
            body: dict[str, Any] = response.json()
            if body["state"] in {"succeeded", "failed", "cancelled"}:
                return body
            await asyncio.sleep(0.02)


class TestRegister:
    async def test_register_queues_a_welcome_job_that_succeeds(
        self, client: httpx.AsyncClient
    ) -> None:
        """POST /register answers 202 with a status URL; the job then shows succeeded there."""
        response = await client.post("/register", json=ADA)
        assert 202 == response.status_code
        accepted = response.json()
        assert f"/jobs/{accepted['job_id']}" == accepted["status_url"]
        body = await until_finished(client, accepted["status_url"])
        assert ("succeeded", "notify.send_welcome", {"sent": False, "to": ADA["email"]}) == (
            body["state"],
            body["task"],
            body["result"],
        )

    async def test_repeated_registration_returns_the_same_job(
        self, client: httpx.AsyncClient
    ) -> None:
        """A retried request does not queue a second welcome email."""
        first = await client.post("/register", json=ADA)
        second = await client.post("/register", json={**ADA, "email": "ADA@example.com"})
        assert first.json()["job_id"] == second.json()["job_id"]

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"name": "Ada"}, "email"),
            ({"email": "not-an-address", "name": "Ada"}, "email"),
            ({"email": "ada@example.com", "name": ""}, "name"),
            ({"email": "ada@example.com", "name": "Ada\r\nBcc: x@example.com"}, "name"),
        ],
    )
    async def test_bad_input_is_422(
        self, client: httpx.AsyncClient, payload: dict[str, str], field: str
    ) -> None:
        """Invalid registrations are refused with 422 naming the field, and queue nothing."""
        response = await client.post("/register", json=payload)
        assert 422 == response.status_code
        assert [["body", field]] == [e["loc"] for e in response.json()["detail"]]
        listing = await client.get("/jobs", headers=AUTH)
        assert [] == requested(listing)


class TestJobsApi:
    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    )
    async def test_jobs_need_the_api_token(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        """Without the bearer token /jobs answers 401 and says how to authenticate."""
        response = await client.get("/jobs", headers=headers)
        assert (401, "Bearer") == (response.status_code, response.headers["www-authenticate"])

    async def test_jobs_listing_with_the_token(self, client: httpx.AsyncClient) -> None:
        """With the token the registration's job is listed."""
        job_id = (await client.post("/register", json=ADA)).json()["job_id"]
        response = await client.get("/jobs", headers=AUTH)
        assert [job_id] == [item["id"] for item in requested(response)]


class TestHealth:
    async def test_health(self, client: httpx.AsyncClient) -> None:
        """GET /health answers without credentials, for load balancers."""
        response = await client.get("/health")
        assert (200, {"status": "ok"}) == (response.status_code, response.json())


class TestWelcomeEmail:
    async def test_welcome_email_is_sent_when_smtp_is_configured(
        self, environment: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With OFFLOAD_SMTP_* set, the job sends the email; its Message-ID comes from the job."""
        async with MailSink(port=0) as sink:
            monkeypatch.setenv("OFFLOAD_SMTP_HOST", "127.0.0.1")
            monkeypatch.setenv("OFFLOAD_SMTP_PORT", str(sink.port))
            monkeypatch.setenv("OFFLOAD_SMTP_TLS", "none")
            monkeypatch.setenv("OFFLOAD_SMTP_SENDER", "Notify <notify@example.com>")
            service = fresh_service()
            transport = httpx.ASGITransport(service.app)
            async with (
                service.app.router.lifespan_context(service.app),
                httpx.AsyncClient(transport=transport, base_url="http://test") as client,
            ):
                accepted = (await client.post("/register", json=ADA)).json()
                body = await until_finished(client, accepted["status_url"])
            async with asyncio.timeout(10):
                (message,) = await sink.wait_for(1)
        assert "succeeded" == body["state"]
        assert (["ada@example.com"], "Welcome, Ada Lovelace!") == (
            message.recipients,
            message.subject,
        )
        assert accepted["job_id"] in (message.header("Message-ID") or "")
