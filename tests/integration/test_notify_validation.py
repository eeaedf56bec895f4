"""The reference service refuses, at the request, what its welcome email could never carry,
with the email layer's own check; and a welcome job that cannot be sent fails at once.

Through the service's ASGI app with its real lifespan (SQLite file, embedded worker) and,
where mail is sent, a real SMTP sink on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import pytest
from pydantic.functional_validators import AfterValidator

from offload import JobFailed, JobState
from offload.email import check_header_value
from offload.email.sink import MailSink
from tests.integration.test_notify_service import (
    AUTH,
    environment,
    fresh_service,
    requested,
    until_finished,
)

__all__ = ["environment"]  # the fixture, shared with the service's own tests

# Names the issue saw accepted (202) and then retried five times by the welcome job.
UNSENDABLE = {
    "U+2028": ("Ada\u2028Bcc: evil@example.org", "U+2028"),
    "U+0085": ("Ada\x85Bcc: evil@example.org", "U+0085"),
    "NUL": ("Ada\x00Lovelace", "U+0000"),
    "VT": ("Ada\x0bBcc: evil@example.org", "U+000B"),
    "FF": ("Ada\x0cBcc: evil@example.org", "U+000C"),
    "CR LF": ("Ada\r\nBcc: evil@example.org", "U+000D"),
    "LF": ("Ada\nBcc: evil@example.org", "U+000A"),
    "encoded CR LF": ("Ada =?utf-8?q?=0D=0ABcc:_evil@example.org?=", "U+000D"),
}
# Found by the generated header-injection test: folding once lost the space after "Bcc:".
NBSP_NAME = "HelloHelloHelloBcc: evil@example.org\xa0HelloBcc: evil\xa0"


@pytest.fixture
async def sink(environment: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MailSink]:
    """A real SMTP sink the service's welcome job sends to."""
    async with MailSink(port=0) as running:
        monkeypatch.setenv("OFFLOAD_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("OFFLOAD_SMTP_PORT", str(running.port))
        monkeypatch.setenv("OFFLOAD_SMTP_TLS", "none")
        monkeypatch.setenv("OFFLOAD_SMTP_SENDER", "Notify <notify@example.com>")
        yield running


@pytest.fixture
async def service(environment: None) -> AsyncIterator[ModuleType]:
    """The service module, its lifespan running (store open, embedded worker started)."""
    module = fresh_service()
    async with module.app.router.lifespan_context(module.app):
        yield module


@pytest.fixture
async def client(service: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


class TestUnsendableNames:
    @pytest.mark.parametrize(("name", "code"), UNSENDABLE.values(), ids=UNSENDABLE.keys())
    async def test_refused_with_422_naming_the_field(
        self, client: httpx.AsyncClient, name: str, code: str
    ) -> None:
        """A name with a line break or control character (or an encoded line break) is a
        422 that names ``name`` and the character, and queues nothing."""
        response = await client.post("/register", json={"email": "ada@example.com", "name": name})
        assert 422 == response.status_code, response.text
        [error] = response.json()["detail"]
        assert ["body", "name"] == error["loc"]
        assert code in error["msg"]
        listing = await client.get("/jobs", headers=AUTH)
        assert [] == requested(listing)

    def test_the_service_uses_the_email_layers_check(self, environment: None) -> None:
        """The request model's only check on ``name`` beyond its length is the email layer's
        own function, so the two cannot drift apart."""
        metadata = fresh_service().Registration.model_fields["name"].metadata
        validators = [m.func for m in metadata if isinstance(m, AfterValidator)]
        assert [check_header_value] == validators

    async def test_no_break_space_is_accepted_and_arrives_intact(
        self, sink: MailSink, client: httpx.AsyncClient
    ) -> None:
        """A no-break space is text: 202, and the welcome subject arrives as sent."""
        response = await client.post(
            "/register", json={"email": "ada@example.com", "name": NBSP_NAME}
        )
        assert 202 == response.status_code, response.text
        body = await until_finished(client, response.json()["status_url"])
        assert "succeeded" == body["state"]
        async with asyncio.timeout(10):
            (message,) = await sink.wait_for(1)
        assert f"Welcome, {NBSP_NAME}!" == message.subject


class TestDoomedWelcomeJob:
    async def test_fails_at_the_first_attempt_with_the_reason(
        self, sink: MailSink, service: ModuleType
    ) -> None:
        """A welcome job whose name cannot go in a header (enqueued past the endpoint, say
        by an older version of it) fails at attempt 1 of 6, the reason stored, nothing sent."""
        job = await service.send_welcome.enqueue("ada@example.com", "Ada\u2028Bcc: x@y.org")
        with pytest.raises(JobFailed):
            await job.result(timeout=20)
        stored = await job.refresh()
        assert (JobState.FAILED, 1, 6) == (stored.state, stored.attempt, stored.record.max_attempts)
        assert stored.error is not None
        assert "ValidationError" == stored.error.type
        for needle in ("name", "U+2028", "single line"):
            assert needle in stored.error.message
        assert [] == sink.messages
