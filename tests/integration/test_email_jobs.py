"""Email sent as jobs: a real Offload on a SQLite file, a real Worker and real SMTP sinks.

Each test checks how many attempts the job took, because that is the promise: transient
failures are retried until the mail goes out, permanent ones fail on the first attempt with
the server's answer in the job's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest

from offload import Job, JobContext, JobFailed, JobState, Offload, Worker
from offload.email import (
    PERMANENT_ERRORS,
    Address,
    EmailMessage,
    Mailer,
    SendResult,
    Templates,
    make_message_id,
    register,
)
from offload.email.sink import MailSink
from offload.email.testing import FaultySink

SENDER = "App <app@example.com>"
# Short enough that three attempts take milliseconds; the policy's shape is unchanged.
BACKOFF = 0.01


class RecordingMailer(Mailer):
    """A real mailer that also notes the Message-ID of every attempt, including the ones
    the server never acknowledged (which the sink does not keep)."""

    def __init__(self, port: int, **options: Any) -> None:
        options.setdefault("tls", "none")
        options.setdefault("sender", SENDER)
        super().__init__("127.0.0.1", port, timeout=5, **options)
        self.message_ids: list[str | None] = []

    async def send(self, message: EmailMessage, *, message_id: str | None = None) -> SendResult:
        self.message_ids.append(message_id)
        return await super().send(message, message_id=message_id)


class ScriptedSink(FaultySink):
    """A FaultySink whose scripted MAIL failures each get their own reply, in order."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(port=0, fail_first=len(replies), fail_at="mail")
        self._replies = list(replies)

    def _take_failure(self) -> bool:
        # FaultySink asks this before answering with fail_reply; set the next reply first.
        if self._replies:
            self.fail_reply = self._replies.pop(0)
        return super()._take_failure()


@contextlib.asynccontextmanager
async def running(jobs: Offload) -> AsyncIterator[Worker]:
    """A worker in the test's loop, started after the tasks were registered."""
    worker = Worker(jobs, concurrency=4, install_signals=False)
    runner = asyncio.create_task(worker.run())
    await worker.started.wait()
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)


async def finished(job: Job[Any]) -> Job[Any]:
    """Wait until the job succeeded or failed and return its stored row."""
    with contextlib.suppress(JobFailed):
        await job.result(timeout=20)
    return await job.refresh()


def message(to: str = "bob@example.com") -> EmailMessage:
    return EmailMessage(to=to, subject="Hi", text="Hello")


class TestRegister:
    def test_tasks_are_named_and_queued(self, jobs: Offload) -> None:
        """Both tasks get stable names (so web and worker processes agree) on the email
        queue, with the retry budget given."""
        register(jobs, retries=4)
        send_email = jobs.get_task("offload.send_email")
        send_template = jobs.get_task("offload.send_template")
        expected = [("email", 5), ("email", 5)]
        actual = [
            (t.config.queue, t.config.policy.max_attempts) for t in (send_email, send_template)
        ]
        assert expected == actual

    def test_returns_the_registered_tasks(self, jobs: Offload) -> None:
        """The returned objects are the app's tasks, ready for ``enqueue``."""
        send_email, send_template = register(jobs, queue="mail")
        expected = [jobs.get_task("offload.send_email"), jobs.get_task("offload.send_template")]
        assert expected == [send_email, send_template]
        assert "mail" == send_email.config.queue

    def test_registering_reads_no_settings(
        self, jobs: Offload, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Registering works where the SMTP settings are missing or broken (the web process),
        because the mailer is only built when a worker sends."""
        monkeypatch.setenv("OFFLOAD_SMTP_PORT", "not-a-port")
        register(jobs)
        assert "offload.send_email" in jobs.tasks

    async def test_mailer_from_settings_at_first_send(
        self, jobs: Offload, sink: MailSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without ``mailer=``, the settings in the worker's environment at the first send
        decide where mail goes."""
        send_email, _ = register(jobs, backoff=BACKOFF)
        monkeypatch.setenv("OFFLOAD_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("OFFLOAD_SMTP_PORT", str(sink.port))
        monkeypatch.setenv("OFFLOAD_SMTP_TLS", "none")
        monkeypatch.setenv("OFFLOAD_SMTP_SENDER", SENDER)
        async with running(jobs):
            job = await finished(await send_email.enqueue(message()))
        assert (JobState.SUCCEEDED, 1) == (job.state, job.attempt)
        assert ["bob@example.com"] == [r for m in sink.messages for r in m.recipients]


class TestTransientFailures:
    async def test_421_then_451_then_delivered_on_attempt_3(self, jobs: Offload) -> None:
        """A server closing down (421) and then busy (451) costs two attempts; the third
        delivers exactly one message."""
        async with ScriptedSink(["421 4.3.2 shutting down", "451 4.3.0 busy"]) as sink:
            send_email, _ = register(jobs, mailer=RecordingMailer(sink.port), backoff=BACKOFF)
            async with running(jobs):
                job = await finished(await send_email.enqueue(message()))
        assert (JobState.SUCCEEDED, 3) == (job.state, job.attempt)
        assert 3 == sink.transactions
        assert 1 == len(sink.messages)

    async def test_message_id_is_the_same_on_every_attempt(self, jobs: Offload) -> None:
        """Every attempt sends the Message-ID derived from the job id, and the delivered
        copy carries it, so a duplicate after a lost reply can be recognised."""
        async with ScriptedSink(["451 4.3.0 busy", "451 4.3.0 busy"]) as sink:
            mailer = RecordingMailer(sink.port)
            send_email, _ = register(jobs, mailer=mailer, backoff=BACKOFF)
            async with running(jobs):
                job = await finished(await send_email.enqueue(message()))
        expected = make_message_id(job.id, "example.com")
        assert [expected] * 3 == mailer.message_ids
        assert [expected] == [m.header("Message-ID") for m in sink.messages]
        assert expected == (await job.result())["message_id"]

    async def test_connection_closed_mid_data_is_retried(self, jobs: Offload) -> None:
        """A connection that drops inside the message data is retried, and the retry
        delivers the mail with the same Message-ID."""
        async with FaultySink(port=0, drop_in_data=1) as sink:
            mailer = RecordingMailer(sink.port)
            send_email, _ = register(jobs, mailer=mailer, backoff=BACKOFF)
            async with running(jobs):
                job = await finished(await send_email.enqueue(message()))
        assert (JobState.SUCCEEDED, 2) == (job.state, job.attempt)
        expected = make_message_id(job.id, "example.com")
        assert [expected, expected] == mailer.message_ids
        assert [expected] == [m.header("Message-ID") for m in sink.messages]

    async def test_every_recipient_deferred_is_retried(self, jobs: Offload) -> None:
        """A 4xx for every recipient is temporary too: retried, then delivered."""
        async with FaultySink(
            port=0, fail_first=1, fail_at="rcpt", fail_reply="450 4.2.1 mailbox busy"
        ) as sink:
            send_email, _ = register(jobs, mailer=RecordingMailer(sink.port), backoff=BACKOFF)
            async with running(jobs):
                job = await finished(await send_email.enqueue(message()))
        assert (JobState.SUCCEEDED, 2) == (job.state, job.attempt)
        assert 1 == len(sink.messages)

    async def test_retries_are_capped(self, jobs: Offload) -> None:
        """A server that stays busy fails the job after ``retries + 1`` attempts, with the
        last reply in the error."""
        async with FaultySink(port=0, fail_first=100, fail_reply="451 4.3.0 busy") as sink:
            send_email, _ = register(
                jobs, mailer=RecordingMailer(sink.port), retries=2, backoff=BACKOFF
            )
            async with running(jobs):
                job = await finished(await send_email.enqueue(message()))
        assert (JobState.FAILED, 3) == (job.state, job.attempt)
        assert job.error is not None
        assert "TransientEmailError" == job.error.type
        assert "451 4.3.0 busy" in job.error.message
        assert [] == sink.messages


class TestPermanentFailures:
    @pytest.mark.parametrize(
        ("stage", "reply"),
        [
            ("rcpt", "550 5.1.1 no such user here"),
            ("mail", "553 5.1.8 sender address rejected"),
            ("data", "554 5.7.1 message rejected as spam"),
        ],
    )
    async def test_5xx_fails_on_the_first_attempt(
        self, jobs: Offload, stage: Literal["mail", "rcpt", "data"], reply: str
    ) -> None:
        """A 5xx reply fails the job at once, with the code and the server's text in the
        job's error; the server sees one transaction only."""
        async with FaultySink(port=0, fail_first=100, fail_at=stage, fail_reply=reply) as sink:
            send_email, _ = register(jobs, mailer=RecordingMailer(sink.port), backoff=BACKOFF)
            async with running(jobs):
                job = await finished(await send_email.enqueue(message()))
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert 1 == sink.transactions
        assert job.error is not None
        assert "PermanentEmailError" == job.error.type
        assert reply in job.error.message
        assert [] == sink.messages

    async def test_535_fails_at_once_and_names_the_settings(
        self, jobs: Offload, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
    ) -> None:
        """Refused credentials fail after one attempt; the error carries 535, the server's
        text and which settings to fix, but never the password."""
        sink = MailSink(port=0, tls_context=server_tls, auth={"app": "s3cret-pass"})
        async with sink:
            mailer = RecordingMailer(
                sink.port,
                tls="starttls",
                tls_context=client_tls,
                username="app",
                password="wrong-pass",
            )
            send_email, _ = register(jobs, mailer=mailer, backoff=BACKOFF)
            async with running(jobs):
                job = await finished(await send_email.enqueue(message()))
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert job.error is not None
        assert "PermanentEmailError" == job.error.type
        for needle in ("535", "Authentication credentials invalid", "OFFLOAD_SMTP_PASSWORD"):
            assert needle in job.error.message
        assert "wrong-pass" not in job.error.message + (job.error.traceback or "")
        assert [] == sink.messages

    async def test_missing_sender_fails_at_once(self, jobs: Offload, sink: MailSink) -> None:
        """No sender on the message or the mailer is a configuration error: retrying the
        same job cannot fix it, so it fails on the first attempt and says what to set."""
        mailer = RecordingMailer(sink.port, sender=None)
        send_email, _ = register(jobs, mailer=mailer, backoff=BACKOFF)
        async with running(jobs):
            job = await finished(await send_email.enqueue(message()))
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert job.error is not None
        assert "ConfigError" == job.error.type
        assert "OFFLOAD_SMTP_SENDER" in job.error.message


class TestSendTemplate:
    async def test_renders_and_delivers(
        self, jobs: Offload, sink: MailSink, templates_dir: Path
    ) -> None:
        """The worker renders the template with the stored context (HTML autoescaped) and
        delivers it under the job's Message-ID."""
        _, send_template = register(
            jobs,
            mailer=RecordingMailer(sink.port),
            templates=Templates(templates_dir),
            backoff=BACKOFF,
        )
        async with running(jobs):
            job = await finished(
                await send_template.enqueue(
                    "welcome", "Bob <bob@example.com>", {"name": "Bob", "code": "<42>"}
                )
            )
        assert (JobState.SUCCEEDED, 1) == (job.state, job.attempt)
        [got] = sink.messages
        assert ("Welcome, Bob!", ["bob@example.com"]) == (got.subject, got.recipients)
        assert got.html is not None
        assert "<b>&lt;42&gt;</b>" in got.html
        assert make_message_id(job.id, "example.com") == got.header("Message-ID")

    async def test_keyword_options_reach_the_message(
        self, jobs: Offload, sink: MailSink, templates_dir: Path
    ) -> None:
        """Sender, Cc and Bcc given at enqueue time are stored with the job and used."""
        _, send_template = register(
            jobs,
            mailer=RecordingMailer(sink.port),
            templates=Templates(templates_dir),
            backoff=BACKOFF,
        )
        async with running(jobs):
            job = await finished(
                await send_template.enqueue(
                    "receipt",
                    ["bob@example.com"],
                    {"number": 7, "total": "9.50"},
                    sender="shop@shop.example",
                    cc=["carol@example.com"],
                    bcc=["audit@example.com"],
                )
            )
        assert JobState.SUCCEEDED == job.state
        [got] = sink.messages
        expected = (
            "shop@shop.example",
            ["bob@example.com", "carol@example.com", "audit@example.com"],
        )
        assert expected == (got.sender, got.recipients)
        assert "Receipt 7" == got.subject

    async def test_missing_variable_fails_at_once(
        self, jobs: Offload, sink: MailSink, templates_dir: Path
    ) -> None:
        """A variable the template needs but the context lacks fails the job on the first
        attempt, naming the variable; nothing is sent."""
        _, send_template = register(
            jobs,
            mailer=RecordingMailer(sink.port),
            templates=Templates(templates_dir),
            backoff=BACKOFF,
        )
        async with running(jobs):
            job = await finished(
                await send_template.enqueue("welcome", "bob@example.com", {"name": "Bob"})
            )
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert job.error is not None
        assert "TemplateError" == job.error.type
        assert "code" in job.error.message
        assert [] == sink.messages

    async def test_unknown_template_fails_at_once(
        self, jobs: Offload, sink: MailSink, templates_dir: Path
    ) -> None:
        """A template name with no files fails on the first attempt."""
        _, send_template = register(
            jobs,
            mailer=RecordingMailer(sink.port),
            templates=Templates(templates_dir),
            backoff=BACKOFF,
        )
        async with running(jobs):
            job = await finished(await send_template.enqueue("nope", "bob@example.com"))
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert job.error is not None
        assert "TemplateError" == job.error.type


class TestInvalidMessages:
    """A message that does not validate can never be sent: the job fails at the first
    attempt with the reason, instead of spending its retries on the same refusal."""

    async def test_template_rendering_a_bad_subject_fails_at_once(
        self, jobs: Offload, sink: MailSink, templates_dir: Path
    ) -> None:
        """A context value with U+2028 makes the rendered subject invalid: InvalidMessage
        on attempt 1, naming the template, the field and the character; nothing is sent."""
        _, send_template = register(
            jobs,
            mailer=RecordingMailer(sink.port),
            templates=Templates(templates_dir),
            backoff=BACKOFF,
        )
        async with running(jobs):
            job = await finished(
                await send_template.enqueue(
                    "welcome", "bob@example.com", {"name": "Bob\u2028Bcc: x@y.org", "code": 1}
                )
            )
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert job.error is not None
        assert "InvalidMessage" == job.error.type
        for needle in ("'welcome'", "subject", "U+2028"):
            assert needle in job.error.message
        assert [] == sink.messages

    async def test_message_built_in_a_task_fails_at_once(
        self, jobs: Offload, sink: MailSink
    ) -> None:
        """A task that builds its own message from a stored argument, with
        give_up_on=PERMANENT_ERRORS, fails at attempt 1 when the argument cannot go in a
        header; the job's error names the field and the character."""
        mailer = RecordingMailer(sink.port)

        @jobs.task(name="tests.welcome", retries=5, backoff=BACKOFF, give_up_on=PERMANENT_ERRORS)
        async def welcome(ctx: JobContext, name: str) -> dict[str, object]:
            email = EmailMessage(
                to=[Address(email="bob@example.com", name=name)], subject="Hi", text="x"
            )
            return (await mailer.send(email)).as_dict()

        async with running(jobs):
            job = await finished(await welcome.enqueue("Bob\x0bBcc: evil@example.org"))
        assert (JobState.FAILED, 1) == (job.state, job.attempt)
        assert job.error is not None
        assert "ValidationError" == job.error.type
        assert "name" in job.error.message
        assert "U+000B" in job.error.message
        assert ([], []) == (mailer.message_ids, sink.messages)

    async def test_no_break_space_from_a_template_arrives_intact(
        self, jobs: Offload, sink: MailSink, templates_dir: Path
    ) -> None:
        """A no-break space in the context reaches the reader's subject as it was."""
        _, send_template = register(
            jobs,
            mailer=RecordingMailer(sink.port),
            templates=Templates(templates_dir),
            backoff=BACKOFF,
        )
        name = "HelloHelloHello Bcc: evil@example.org\xa0HelloBcc: evil\xa0"
        async with running(jobs):
            job = await finished(
                await send_template.enqueue("welcome", "bob@example.com", {"name": name, "code": 1})
            )
        assert (JobState.SUCCEEDED, 1) == (job.state, job.attempt)
        [got] = sink.messages
        assert f"Welcome, {name}!" == got.subject
