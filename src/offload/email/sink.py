"""A local SMTP server that keeps the mail it receives, for development and tests.

Point the mailer at it (``OFFLOAD_SMTP_HOST=127.0.0.1 OFFLOAD_SMTP_PORT=1025
OFFLOAD_SMTP_TLS=none``) and read what would have been sent, in Python (``sink.messages``)
or as JSON over HTTP (``GET /messages``). It listens on loopback only: it accepts mail from
anyone who can reach it.
"""

from __future__ import annotations

import asyncio
import email.policy
import hmac
import ipaddress
import json
import logging
import ssl
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from offload.errors import ConfigError

__all__ = [
    "CapturedAttachment",
    "CapturedMessage",
    "MailSink",
    "SinkHTTPServer",
    "messages_as_json",
    "run_sink",
]

logger = logging.getLogger("offload.email")

# Enough to page through a day of development mail without growing without bound.
DEFAULT_MAX_MESSAGES = 1000
# Larger than any provider accepts, so the sink never refuses what a real server would take.
_DATA_SIZE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class CapturedAttachment:
    """An attachment as received."""

    filename: str | None
    content_type: str
    content: bytes


@dataclass(frozen=True)
class CapturedMessage:
    """A message as the sink received it: the SMTP envelope, the parsed parts and the raw
    bytes (for checks the parsed view would hide)."""

    sender: str
    recipients: list[str]
    subject: str
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    attachments: list[CapturedAttachment]
    raw: bytes
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def parse(cls, sender: str, recipients: list[str], raw: bytes) -> CapturedMessage:
        """Parse the DATA the client sent."""
        parsed = message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, MimeMessage)  # guaranteed by policy.default
        text_part = parsed.get_body(preferencelist=("plain",))
        html_part = parsed.get_body(preferencelist=("html",))
        attachments = [
            CapturedAttachment(
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                content=_payload(part),
            )
            for part in parsed.iter_attachments()
            if isinstance(part, MimeMessage)
        ]
        return cls(
            sender=sender,
            recipients=list(recipients),
            subject=str(parsed.get("Subject", "")),
            headers=[(name, str(value)) for name, value in parsed.items()],
            text=_content(text_part),
            html=_content(html_part),
            attachments=attachments,
            raw=raw,
        )

    def header(self, name: str) -> str | None:
        """The first header with that name (case-insensitive), or None."""
        lowered = name.lower()
        return next((v for n, v in self.headers if n.lower() == lowered), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (attachments by name, type and size; raw as text)."""
        return {
            "sender": self.sender,
            "recipients": self.recipients,
            "subject": self.subject,
            "headers": [[n, v] for n, v in self.headers],
            "text": self.text,
            "html": self.html,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": len(a.content)}
                for a in self.attachments
            ],
            "received_at": self.received_at.isoformat(),
            "raw": self.raw.decode("utf-8", errors="replace"),
        }


def _payload(part: MimeMessage) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _content(part: Any) -> str | None:
    if part is None:
        return None
    content = part.get_content()
    # The wire form has CRLF line ends; callers compare with the text they sent.
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def messages_as_json(messages: list[CapturedMessage]) -> list[dict[str, Any]]:
    """The captured messages as JSON-able dicts, newest last."""
    return [m.to_dict() for m in messages]


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"the mail sink only listens on loopback (127.0.0.1, ::1 or localhost), "
            f"not {host!r}: it accepts mail from anyone who can reach it"
        )


class _Handler:
    """The aiosmtpd handler: every accepted transaction goes to the sink."""

    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.sink._store(CapturedMessage.parse(envelope.mail_from or "", envelope.rcpt_tos, raw))
        return "250 2.0.0 OK: captured"


class MailSink:
    """An SMTP server on loopback that keeps what it receives.

    Use ``async with MailSink(port=0) as sink:`` for a free port (then ``sink.port``).
    Optional ``tls_context`` offers STARTTLS (or, with ``implicit_tls=True``, wraps the whole
    connection); ``auth={"user": "password"}`` requires AUTH, which the sink only offers
    over TLS.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        folder: str | Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        auth: Mapping[str, str] | None = None,
    ) -> None:
        _check_loopback(host)
        if implicit_tls and tls_context is None:
            raise ConfigError("implicit_tls=True needs a tls_context with the certificate")
        self.host = host
        self.port = port
        self.folder = Path(folder) if folder is not None else None
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self._auth = dict(auth) if auth is not None else None
        self._messages: deque[CapturedMessage] = deque(maxlen=max_messages)
        self._server: asyncio.Server | None = None
        self._received = asyncio.Event()
        self._count = 0
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def messages(self) -> list[CapturedMessage]:
        """The captured messages, oldest first (at most ``max_messages``)."""
        return list(self._messages)

    def clear(self) -> None:
        """Forget the captured messages."""
        self._messages.clear()

    async def wait_for(self, count: int) -> list[CapturedMessage]:
        """Wait until at least ``count`` messages were captured since the sink started
        (wrap in ``asyncio.timeout`` to bound the wait)."""
        while self._count < count:
            self._received.clear()
            await self._received.wait()
        return self.messages

    def handler(self) -> object:
        """The aiosmtpd handler for one connection; subclasses return one that misbehaves."""
        return _Handler(self)

    def smtp_class(self) -> type[SMTP]:
        """The aiosmtpd server class; subclasses override it to script protocol faults."""
        return SMTP

    def _smtp(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS because it only counts STARTTLS; with
            # implicit TLS the whole connection is encrypted, so the warning does not apply.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            server = self._create_smtp()
        self._connections.add(server)
        return server

    def _create_smtp(self) -> SMTP:
        return self.smtp_class()(
            self.handler(),
            hostname="offload-sink",
            data_size_limit=_DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True,
            # STARTTLS is only offered when the connection is not TLS already.
            tls_context=None if self.implicit_tls else self.tls_context,
            authenticator=self._authenticate if self._auth is not None else None,
            auth_required=self._auth is not None,
            # aiosmtpd only counts STARTTLS as encryption; with implicit TLS the whole
            # connection is already encrypted, so AUTH is safe to offer.
            auth_require_tls=not self.implicit_tls,
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self._auth is None:
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", errors="replace")
        expected = self._auth.get(login)
        ok = expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), auth_data.password
        )
        return AuthResult(success=ok, handled=False)

    def _store(self, message: CapturedMessage) -> None:
        self._messages.append(message)
        self._count += 1
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = message.received_at.strftime("%Y%m%dT%H%M%S%f")
            (self.folder / f"{stamp}-{self._count}.eml").write_bytes(message.raw)
        self._received.set()

    async def start(self) -> None:
        """Start listening; with ``port=0`` the chosen port is in ``self.port`` afterwards."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._smtp,
            host=self.host,
            port=self.port,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(
            "mail sink listening on %s:%s",
            self.host,
            self.port,
            extra={"action": "email.sink.started", "host": self.host, "port": self.port},
        )

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            # Server.close() leaves accepted connections open before Python 3.13.
            for connection in list(self._connections):
                if connection.transport is not None:
                    connection.transport.close()
            await self._server.wait_closed()
            self._server = None
            # Let the closed connections run their connection_lost callbacks.
            for _ in range(3):
                await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


class SinkHTTPServer:
    """A tiny JSON view of a sink: ``GET /messages`` returns the captured messages.

    Plain asyncio, loopback only, read-only; a development aid, not a web server.
    """

    def __init__(self, sink: MailSink, host: str = "127.0.0.1", port: int = 8025) -> None:
        _check_loopback(host)
        self.sink = sink
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start listening; with ``port=0`` the chosen port is in ``self.port`` afterwards."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            method, path = _request_target(request_line)
            body: object
            if method != "GET":
                status, body = "405 Method Not Allowed", {"error": "only GET is supported"}
            elif path.split("?", 1)[0] in ("/", "/messages"):
                status, body = "200 OK", messages_as_json(self.sink.messages)
            else:
                status, body = "404 Not Found", {"error": "try GET /messages"}
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode("ascii")
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def _request_target(line: bytes) -> tuple[str, str]:
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        return "", ""
    return parts[0].upper(), parts[1]


async def run_sink(
    host: str = "127.0.0.1",
    port: int = 1025,
    http_port: int | None = None,
    *,
    folder: str | Path | None = None,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    ready: Callable[[MailSink, SinkHTTPServer | None], None] | None = None,
) -> None:
    """Run the sink (and, given ``http_port``, its JSON view) until cancelled.

    ``ready`` is called once both listen, e.g. for a command line to print the ports.
    """
    sink = MailSink(host, port, folder=folder, max_messages=max_messages)
    http = SinkHTTPServer(sink, host, http_port) if http_port is not None else None
    async with sink:
        if http is not None:
            await http.start()
        try:
            if ready is not None:
                ready(sink, http)
            await asyncio.Event().wait()
        finally:
            if http is not None:
                await http.stop()
