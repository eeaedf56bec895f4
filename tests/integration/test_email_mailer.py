"""Mailer against a real SMTP server on loopback: delivery, TLS, AUTH and failure classes."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from offload.email import (
    EmailMessage,
    Mailer,
    PermanentEmailError,
    Refusal,
    TransientEmailError,
    make_message_id,
)
from offload.email.sink import MailSink
from offload.email.testing import FaultySink
from offload.errors import ConfigError

USERS = {"app": "s3cret-pass"}


def _message(**fields: object) -> EmailMessage:
    base: dict[str, object] = {"to": ["bob@example.com"], "subject": "Hi", "text": "Hello Bob"}
    return EmailMessage.model_validate({**base, **fields})


def _plain(sink: MailSink) -> Mailer:
    return Mailer("127.0.0.1", sink.port, tls="none", sender="app@example.com", timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class TestDelivery:
    async def test_text_message(self, sink: MailSink, mailer: Mailer) -> None:
        """A text message arrives with its subject, body, sender and recipients."""
        result = await mailer.send(_message())
        [got] = sink.messages
        assert (got.sender, got.recipients) == ("app@example.com", ["bob@example.com"])
        assert (got.subject, got.text, got.html) == ("Hi", "Hello Bob\n", None)
        assert result.accepted == ["bob@example.com"]
        assert got.header("Message-ID") == result.message_id

    async def test_html_message_gets_derived_text(self, sink: MailSink, mailer: Mailer) -> None:
        """An HTML-only message is sent as multipart/alternative with a derived text part."""
        await mailer.send(_message(text=None, html="<p>Hello <b>Bob</b></p>"))
        [got] = sink.messages
        assert (got.text, got.html) == ("Hello Bob\n", "<p>Hello <b>Bob</b></p>\n")

    async def test_attachments(self, sink: MailSink, mailer: Mailer, tmp_path: Path) -> None:
        """Bytes and path attachments arrive intact with their filename and type."""
        path = tmp_path / "report.csv"
        path.write_bytes(b"a,b\n1,2\n")
        blob = bytes(range(256)) * 10
        await mailer.send(
            _message(
                attachments=[
                    {"filename": "blob.bin", "content": blob},
                    {"filename": "rapport é.csv", "path": path},
                ]
            )
        )
        [got] = sink.messages
        assert [(a.filename, a.content_type, a.content) for a in got.attachments] == [
            ("blob.bin", "application/octet-stream", blob),
            ("rapport é.csv", "text/csv", b"a,b\n1,2\n"),
        ]

    async def test_bcc_only_in_envelope(self, sink: MailSink, mailer: Mailer) -> None:
        """Bcc recipients receive the mail but appear in no header."""
        await mailer.send(_message(cc="c@example.com", bcc="hidden@example.com"))
        [got] = sink.messages
        assert got.recipients == ["bob@example.com", "c@example.com", "hidden@example.com"]
        assert b"hidden" not in got.raw
        assert got.header("Bcc") is None

    async def test_international_names_and_addresses(self, sink: MailSink) -> None:
        """Unicode display names and internationalised addresses survive the trip."""
        mailer = Mailer("127.0.0.1", sink.port, tls="none", sender="Zoë Ünal <zoe@example.com>")
        await mailer.send(_message(to="José Núñez <josé@exämple.com>", subject="Grüße"))
        [got] = sink.messages
        assert (got.subject, got.recipients) == ("Grüße", ["josé@exämple.com"])
        assert got.header("From") == "Zoë Ünal <zoe@example.com>"
        assert got.header("To") == "José Núñez <josé@exämple.com>"

    async def test_international_reply_to_without_smtputf8(
        self, sink: MailSink, mailer: Mailer
    ) -> None:
        """An internationalised Reply-To, when every recipient is ASCII (so the message goes
        out without SMTPUTF8), is still sent and read back as given."""
        await mailer.send(_message(reply_to="José <josé@exämple.com>"))
        [got] = sink.messages
        assert got.header("Reply-To") == "José <josé@exämple.com>"
        assert got.raw.isascii()

    async def test_stable_message_id(self, sink: MailSink, mailer: Mailer) -> None:
        """The Message-ID given to send() is the one delivered, every time."""
        message_id = make_message_id("job-1", "example.com")
        await mailer.send(_message(), message_id=message_id)
        await mailer.send(_message(), message_id=message_id)
        assert [m.header("Message-ID") for m in sink.messages] == [message_id, message_id]

    async def test_extra_headers_and_reply_to(self, sink: MailSink, mailer: Mailer) -> None:
        """Extra headers and Reply-To are sent as given."""
        await mailer.send(_message(headers={"X-Campaign": "spring"}, reply_to="h@example.com"))
        [got] = sink.messages
        assert (got.header("X-Campaign"), got.header("Reply-To")) == ("spring", "h@example.com")

    async def test_message_sender_overrides_default(self, sink: MailSink, mailer: Mailer) -> None:
        """EmailMessage.sender wins over the mailer's default sender."""
        await mailer.send(_message(sender="other@example.org"))
        assert sink.messages[0].sender == "other@example.org"

    async def test_no_sender_anywhere(self, sink: MailSink) -> None:
        """Without any sender the mailer says which setting to add."""
        with pytest.raises(ConfigError, match="OFFLOAD_SMTP_SENDER"):
            await Mailer("127.0.0.1", sink.port, tls="none").send(_message())


@pytest.fixture
def tls(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the test CA)."""
    return server_tls, client_tls


class TestTLS:
    async def test_starttls_with_verified_certificate(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        """STARTTLS upgrades the connection, verifying the server against the given CA."""
        async with MailSink(port=0, tls_context=tls[0]) as sink:
            mailer = Mailer(
                "127.0.0.1", sink.port, tls="starttls", tls_context=tls[1], sender="a@b.org"
            )
            await mailer.send(_message())
        assert len(sink.messages) == 1

    async def test_implicit_tls(self, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
        """Implicit TLS wraps the connection from the first byte."""
        async with MailSink(port=0, tls_context=tls[0], implicit_tls=True) as sink:
            mailer = Mailer(
                "127.0.0.1", sink.port, tls="implicit", tls_context=tls[1], sender="a@b.org"
            )
            await mailer.send(_message())
        assert len(sink.messages) == 1

    async def test_untrusted_certificate_is_permanent(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        """Certificates are verified by default: an unknown CA fails, naming the fix."""
        async with MailSink(port=0, tls_context=tls[0], implicit_tls=True) as sink:
            mailer = Mailer("127.0.0.1", sink.port, tls="implicit", sender="a@b.org")
            with pytest.raises(PermanentEmailError, match="OFFLOAD_SMTP_CA_FILE"):
                await mailer.send(_message())
        assert sink.messages == []

    async def test_starttls_required_but_not_offered(self, sink: MailSink) -> None:
        """With tls='starttls', a server without STARTTLS is refused, not used in clear."""
        mailer = Mailer("127.0.0.1", sink.port, tls="starttls", sender="a@b.org")
        with pytest.raises(PermanentEmailError, match="STARTTLS"):
            await mailer.send(_message())
        assert sink.messages == []


class TestAuth:
    @pytest.fixture
    async def auth_sink(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> AsyncIterator[MailSink]:
        async with MailSink(port=0, tls_context=tls[0], auth=USERS) as running:
            yield running

    def _mailer(
        self, sink: MailSink, tls: tuple[ssl.SSLContext, ssl.SSLContext], password: str
    ) -> Mailer:
        return Mailer(
            "127.0.0.1",
            sink.port,
            username="app",
            password=password,
            tls_context=tls[1],
            sender="app@example.com",
        )

    async def test_login_over_starttls(
        self, auth_sink: MailSink, tls: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        """With a username the mailer logs in after STARTTLS and the mail is accepted."""
        await self._mailer(auth_sink, tls, "s3cret-pass").send(_message())
        assert len(auth_sink.messages) == 1

    async def test_login_over_implicit_tls(
        self, tls: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        """AUTH also works over implicit TLS."""
        sink = MailSink(port=0, tls_context=tls[0], implicit_tls=True, auth=USERS)
        async with sink:
            mailer = Mailer(
                "127.0.0.1",
                sink.port,
                tls="implicit",
                username="app",
                password="s3cret-pass",
                tls_context=tls[1],
                sender="app@example.com",
            )
            await mailer.send(_message())
        assert len(sink.messages) == 1

    async def test_wrong_password_is_permanent_535(
        self,
        auth_sink: MailSink,
        tls: tuple[ssl.SSLContext, ssl.SSLContext],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 535 is permanent; the message names the settings and app passwords, and the
        password appears in no log record or message."""
        caplog.set_level(logging.DEBUG)
        with pytest.raises(PermanentEmailError) as info:
            await self._mailer(auth_sink, tls, "wrong-pass").send(_message())
        assert info.value.code == 535
        assert "Authentication credentials invalid" in info.value.reply
        for needle in ("OFFLOAD_SMTP_USERNAME", "OFFLOAD_SMTP_PASSWORD", "app password"):
            assert needle in str(info.value)
        assert "wrong-pass" not in caplog.text
        assert [r.action for r in caplog.records if r.name == "offload.email"] == [  # type: ignore[attr-defined]
            "email.failed"
        ]
        assert auth_sink.messages == []

    async def test_no_login_is_refused_by_server(
        self, auth_sink: MailSink, tls: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        """Without credentials, a server requiring AUTH refuses the mail permanently."""
        mailer = Mailer("127.0.0.1", auth_sink.port, tls_context=tls[1], sender="a@b.org")
        with pytest.raises(PermanentEmailError) as info:
            await mailer.send(_message())
        assert info.value.code == 530

    def test_password_without_tls_refused(self) -> None:
        """Credentials are never sent over an unencrypted connection."""
        with pytest.raises(ConfigError, match="unencrypted"):
            Mailer("smtp.example.com", username="u", password="p", tls="none")


class TestFailures:
    @pytest.mark.parametrize(("reply", "stage"), [("421 4.3.2 shutting down", "mail"),
                                                  ("451 4.3.0 try later", "mail"),
                                                  ("451 4.3.0 try later", "rcpt"),
                                                  ("452 4.3.1 no space", "data")])  # fmt: skip
    async def test_transient_replies_then_delivery(self, reply: str, stage: str) -> None:
        """A server answering 4xx to the first two attempts makes send() raise
        TransientEmailError exactly twice with the code and reply, then delivers."""
        async with FaultySink(port=0, fail_first=2, fail_reply=reply, fail_at=stage) as sink:  # type: ignore[arg-type]
            mailer = _plain(sink)
            errors: list[TransientEmailError] = []
            for _attempt in range(5):
                try:
                    await mailer.send(_message())
                    break
                except TransientEmailError as exc:
                    errors.append(exc)
        code, text = reply.split(" ", 1)
        assert [(e.code, e.reply) for e in errors] == [(int(code), text)] * 2
        assert len(sink.messages) == 1

    @pytest.mark.parametrize(
        ("reply", "stage"),
        [("550 5.1.1 no such user", "rcpt"), ("553 5.1.3 bad address", "rcpt"),
         ("554 5.7.1 rejected as spam", "data"), ("550 5.7.1 sender refused", "mail")],
    )  # fmt: skip
    async def test_permanent_replies(self, reply: str, stage: str) -> None:
        """5xx replies raise PermanentEmailError carrying the code and the server's text."""
        async with FaultySink(port=0, fail_first=1, fail_reply=reply, fail_at=stage) as sink:  # type: ignore[arg-type]
            with pytest.raises(PermanentEmailError) as info:
                await _plain(sink).send(_message())
        code, text = reply.split(" ", 1)
        assert (info.value.code, info.value.reply) == (int(code), text)
        assert sink.messages == []

    async def test_some_recipients_refused(self) -> None:
        """When only some recipients are refused the mail goes out and the result lists
        the refusals."""
        refuse = {"gone@example.com": "550 5.1.1 no such user"}
        async with FaultySink(port=0, refuse=refuse) as sink:
            result = await _plain(sink).send(_message(to=["bob@example.com", "gone@example.com"]))
        assert result.accepted == ["bob@example.com"]
        assert result.refused == {"gone@example.com": Refusal(550, "5.1.1 no such user")}
        assert sink.messages[0].recipients == ["bob@example.com"]

    async def test_all_refused_permanent(self) -> None:
        """All recipients refused with 5xx: PermanentEmailError with every refusal."""
        refuse = {"a@example.com": "550 5.1.1 no", "b@example.com": "553 5.1.3 bad"}
        async with FaultySink(port=0, refuse=refuse) as sink:
            with pytest.raises(PermanentEmailError) as info:
                await _plain(sink).send(_message(to=list(refuse)))
        assert info.value.refused == {
            "a@example.com": Refusal(550, "5.1.1 no"),
            "b@example.com": Refusal(553, "5.1.3 bad"),
        }

    async def test_all_refused_any_4xx_transient(self) -> None:
        """All recipients refused but one only for now: TransientEmailError."""
        refuse = {"a@example.com": "550 5.1.1 no", "b@example.com": "450 4.2.1 busy"}
        async with FaultySink(port=0, refuse=refuse) as sink:
            with pytest.raises(TransientEmailError) as info:
                await _plain(sink).send(_message(to=list(refuse)))
        assert set(info.value.refused) == set(refuse)

    async def test_connection_closed_mid_data(self) -> None:
        """A connection dropped during DATA is transient; the next attempt delivers."""
        async with FaultySink(port=0, drop_in_data=1) as sink:
            mailer = _plain(sink)
            with pytest.raises(TransientEmailError):
                await mailer.send(_message())
            await mailer.send(_message())
        assert len(sink.messages) == 1

    async def test_connection_refused_is_transient(self) -> None:
        """Nobody listening: TransientEmailError without a code."""
        mailer = Mailer("127.0.0.1", _free_port(), tls="none", sender="a@b.org", timeout=5)
        with pytest.raises(TransientEmailError) as info:
            await mailer.send(_message())
        assert info.value.code is None

    async def test_silent_server_times_out(self) -> None:
        """A server that never greets makes send() fail transiently after the timeout."""

        writers: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            mailer = Mailer("127.0.0.1", port, tls="none", sender="a@b.org", timeout=0.2)
            with pytest.raises(TransientEmailError, match="timed out"):
                await mailer.send(_message())
        finally:
            server.close()
            for writer in writers:
                writer.close()
                await writer.wait_closed()
            await server.wait_closed()
