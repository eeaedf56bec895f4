"""Fixtures for the email tests that talk to a server: a real SMTP sink on a free loopback
port, and test TLS certificates from trustme so that certificate verification stays on."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from offload.email import Mailer
from offload.email.sink import MailSink


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway CA for the test servers' certificates."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """The sink's TLS context: a certificate for 127.0.0.1 and localhost signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts only ``ca``, with verification left on."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    async with MailSink(port=0) as running:
        yield running


@pytest.fixture
def mailer(sink: MailSink) -> Mailer:
    """A mailer for the plain sink (no TLS: it is loopback)."""
    return Mailer("127.0.0.1", sink.port, tls="none", sender="App <app@example.com>", timeout=5)
