"""Fixtures for the tests that talk to a server: a real SMTP sink on a free loopback port,
test TLS certificates from trustme so that certificate verification stays on, and a fresh
store on each server-backed backend (SQLite, Redis, PostgreSQL)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest
import trustme

from offload.email import Mailer
from offload.email.sink import MailSink
from offload.errors import StoreUnavailable
from offload.stores import open_store
from tests.stores.conftest import (
    REDIS_URL,
    drop_postgres_schema,
    drop_redis_keys,
    postgres_unreachable,
    postgres_url,
    redis_unreachable,
)


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


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh store on SQLite, then Redis, then PostgreSQL (a prefix or schema of
    the test's own on the shared servers, removed afterwards)."""
    prefix = f"test_{uuid4().hex}"
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'jobs.db'}",
        "redis": f"{REDIS_URL}?prefix={prefix}&op_timeout=2",
        "postgres": postgres_url(prefix),
    }[request.param]
    probe = open_store(url)
    try:
        await probe.open()
    except StoreUnavailable as exc:
        if request.param == "redis":
            redis_unreachable(exc)
        postgres_unreachable(exc)
    await probe.close()
    try:
        yield url
    finally:
        if request.param == "redis":
            await drop_redis_keys(prefix)
        if request.param == "postgres":
            await drop_postgres_schema(prefix)
