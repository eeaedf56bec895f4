"""The task functions the app registers: send_email and send_template."""

from __future__ import annotations

from pathlib import Path

import pytest

from offload.email import (
    EmailMessage,
    Mailer,
    Templates,
    TransientEmailError,
    make_message_id,
    send_email,
    send_template,
)
from offload.email.sink import MailSink
from offload.email.testing import FaultySink


def _message() -> EmailMessage:
    return EmailMessage.model_validate({"to": "bob@example.com", "subject": "Hi", "text": "x"})


class TestSendEmail:
    async def test_result_is_json(self, sink: MailSink, mailer: Mailer) -> None:
        """The result is a plain dict a job can store."""
        result = await send_email(_message(), mailer=mailer)
        assert result["accepted"] == ["bob@example.com"]
        assert result["refused"] == {}

    async def test_retries_reuse_the_message_id(self) -> None:
        """With a job id, an attempt whose reply was lost and the retry that follows carry
        the same Message-ID, so the duplicate can be recognised downstream."""
        async with FaultySink(port=0, drop_in_data=1) as sink:
            mailer = Mailer("127.0.0.1", sink.port, tls="none", sender="app@example.com")
            with pytest.raises(TransientEmailError):
                await send_email(_message(), job_id="01JOB", mailer=mailer)
            result = await send_email(_message(), job_id="01JOB", mailer=mailer)
        expected = make_message_id("01JOB", "example.com")
        assert result["message_id"] == expected
        assert [m.header("Message-ID") for m in sink.messages] == [expected]


class TestSendTemplate:
    async def test_renders_and_sends(
        self, sink: MailSink, mailer: Mailer, templates_dir: Path
    ) -> None:
        """send_template renders with the context and sends to the given address."""
        await send_template(
            "welcome",
            "Bob <bob@example.com>",
            {"name": "Bob", "code": "<42>"},
            mailer=mailer,
            templates=Templates(templates_dir),
        )
        [got] = sink.messages
        assert (got.subject, got.recipients) == ("Welcome, Bob!", ["bob@example.com"])
        assert got.html is not None
        assert "&lt;42&gt;" in got.html
        assert got.text == "Hello Bob\n\nYour code: <42>\n"

    async def test_templates_folder_from_settings(
        self,
        sink: MailSink,
        mailer: Mailer,
        templates_dir: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without templates=, the folder comes from OFFLOAD_SMTP_TEMPLATES."""
        monkeypatch.setenv("OFFLOAD_SMTP_TEMPLATES", str(templates_dir))
        await send_template(
            "receipt", ["bob@example.com"], {"number": 1, "total": 2}, mailer=mailer
        )
        assert sink.messages[0].subject == "Receipt 1"
