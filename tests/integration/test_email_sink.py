"""MailSink: capture, bounds, .eml folder, loopback only, and the JSON view."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from offload.email import EmailMessage, Mailer
from offload.email.sink import MailSink, SinkHTTPServer, messages_as_json, run_sink
from offload.errors import ConfigError


def _message(subject: str = "Hi") -> EmailMessage:
    return EmailMessage(to=["bob@example.com"], subject=subject, text="Hello")


async def _http_get(port: int, path: str, method: str = "GET") -> tuple[int, object]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


class TestMailSink:
    async def test_captures_parsed_messages(self, sink: MailSink, mailer: Mailer) -> None:
        """Each message is kept with envelope, headers, parts and raw bytes."""
        await mailer.send(_message())
        [got] = sink.messages
        assert (got.sender, got.recipients, got.subject) == (
            "app@example.com",
            ["bob@example.com"],
            "Hi",
        )
        assert got.raw.startswith(b"From: ")
        assert got.header("subject") == "Hi"

    async def test_bounded(self, mailer: Mailer) -> None:
        """Only the newest max_messages are kept."""
        async with MailSink(port=0, max_messages=2) as small:
            mailer = Mailer("127.0.0.1", small.port, tls="none", sender="a@example.com")
            for n in range(3):
                await mailer.send(_message(f"m{n}"))
        assert [m.subject for m in small.messages] == ["m1", "m2"]

    async def test_writes_eml_files(self, tmp_path: Path) -> None:
        """With a folder, every message is also written as an .eml file."""
        async with MailSink(port=0, folder=tmp_path / "mail") as sink:
            await Mailer("127.0.0.1", sink.port, tls="none", sender="a@example.com").send(
                _message()
            )
        [eml] = (tmp_path / "mail").glob("*.eml")
        assert eml.read_bytes() == sink.messages[0].raw

    async def test_wait_for_and_clear(self, sink: MailSink, mailer: Mailer) -> None:
        """wait_for returns once enough mail arrived; clear forgets it."""
        sending = asyncio.create_task(mailer.send(_message()))
        async with asyncio.timeout(5):
            assert len(await sink.wait_for(1)) == 1
        await sending
        sink.clear()
        assert sink.messages == []

    @pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
    def test_loopback_only(self, host: str) -> None:
        """The sink refuses to listen beyond loopback."""
        with pytest.raises(ConfigError, match="loopback"):
            MailSink(host)

    async def test_json_view(self, sink: MailSink, mailer: Mailer) -> None:
        """messages_as_json gives plain JSON-able dicts."""
        attachment = {"filename": "a.txt", "content": b"abc"}
        data = {**_message().model_dump(), "attachments": [attachment]}
        await mailer.send(EmailMessage.model_validate(data))
        [data] = json.loads(json.dumps(messages_as_json(sink.messages)))
        assert data["subject"] == "Hi"
        assert data["attachments"] == [
            {"filename": "a.txt", "content_type": "text/plain", "size": 3}
        ]


class TestHTTPView:
    async def test_get_messages(self, sink: MailSink, mailer: Mailer) -> None:
        """GET /messages returns the captured list; other paths 404, other methods 405."""
        http = SinkHTTPServer(sink, port=0)
        await http.start()
        try:
            await mailer.send(_message())
            status, body = await _http_get(http.port, "/messages")
            assert status == 200
            assert isinstance(body, list)
            assert [m["subject"] for m in body] == ["Hi"]
            assert (await _http_get(http.port, "/nope"))[0] == 404
            assert (await _http_get(http.port, "/messages", "POST"))[0] == 405
        finally:
            await http.stop()

    async def test_run_sink(self) -> None:
        """run_sink serves SMTP and HTTP until cancelled, reporting both when ready."""
        ready: asyncio.Future[tuple[MailSink, SinkHTTPServer | None]] = (
            asyncio.get_running_loop().create_future()
        )
        task = asyncio.create_task(
            run_sink(port=0, http_port=0, ready=lambda s, h: ready.set_result((s, h)))
        )
        try:
            async with asyncio.timeout(5):
                sink, http = await ready
            assert http is not None
            await Mailer("127.0.0.1", sink.port, tls="none", sender="a@example.com").send(
                _message()
            )
            status, body = await _http_get(http.port, "/messages")
            assert (status, len(body)) == (200, 1)  # type: ignore[arg-type]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
