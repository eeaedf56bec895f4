"""The SMTP server's rate limit (``OFFLOAD_SMTP_RATE_LIMIT``): one bucket for both mail
tasks, kept by the job store, so mails reach the server no faster than the limit, whichever
task sends them."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

import offload.email
from offload import Offload, Worker
from offload.email import EmailMessage, Mailer, Templates
from offload.email.sink import MailSink

RATE = 5  # a second


async def test_mails_of_both_tasks_share_the_servers_limit(
    tmp_path: Path, sink: MailSink, mailer: Mailer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_SMTP_RATE_LIMIT", f"{RATE}/s")
    (tmp_path / "hi.subject.txt").write_text("Hi {{ name }}")
    (tmp_path / "hi.txt").write_text("Hello {{ name }}.")
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)
    send_email, send_template = offload.email.register(
        jobs, mailer=mailer, templates=Templates(tmp_path)
    )
    async with jobs:
        for n in range(3):
            message = EmailMessage(to=[f"m{n}@example.com"], subject=f"m{n}", text="x")
            await send_email.enqueue(message)
            await send_template.enqueue("hi", f"t{n}@example.com", {"name": n})
        worker = Worker(jobs, install_signals=False, concurrency=8)
        running = asyncio.create_task(worker.run())
        async with asyncio.timeout(20):
            received = await sink.wait_for(6)
        worker.stop()
        await running
    times = sorted(m.received_at.timestamp() for m in received)
    # One token a fifth of a second, one at a time: six mails span at least a second.
    assert times[-1] - times[0] >= (6 - 1) / RATE - 0.05
    assert all(b - a >= 1 / RATE - 0.05 for a, b in itertools.pairwise(times))


def test_no_limit_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFFLOAD_SMTP_RATE_LIMIT", raising=False)
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)
    send_email, _ = offload.email.register(jobs)
    assert send_email.config.flow is None
