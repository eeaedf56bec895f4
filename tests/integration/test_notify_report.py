"""The reference service's schedules, fired by the test clock: the daily report at 00:00 in
``NOTIFY_TIMEZONE``, mailed as HTML with the figures attached as CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from examples.notify.db import Order, User, database, get_session
from examples.notify.settings import Settings, configure
from examples.notify.tasks import Tasks

from offload import Offload
from offload.email.sink import MailSink
from offload.testing import Clock

ZONE = "Pacific/Auckland"  # far from UTC, so that midnight there is not midnight here


async def test_the_daily_report_fires_at_midnight_in_the_zone(
    tmp_path: Path, sink: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"HOST": "127.0.0.1", "PORT": str(sink.port), "TLS": "none",
                        "SENDER": "Notify <notify@example.com>"}.items():  # fmt: skip
        monkeypatch.setenv(f"OFFLOAD_SMTP_{name}", value)
    settings = configure(
        Settings(data_dir=tmp_path / "data", timezone=ZONE, admin_email="boss@example.com")
    )
    clock = Clock(start=datetime.now(UTC))
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock, embedded_worker=False)
    tasks = Tasks(jobs, settings)
    try:
        async with jobs:
            async for session in get_session(settings):
                session.add_all([User(email="a@example.com", name="A"),
                                 User(email="b@example.com", name="B"),
                                 Order(email="a@example.com", total_cents=500)])  # fmt: skip
                await session.commit()
            await tasks.send_welcome.enqueue("a@example.com", "A")
            now = clock.now.astimezone(ZoneInfo(ZONE))
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            await clock.advance_to(midnight - timedelta(minutes=1))
            assert [] == [m for m in sink.messages if m.recipients == ["boss@example.com"]]
            await clock.advance_to(midnight + timedelta(minutes=1))
        async with asyncio.timeout(10):
            await sink.wait_for(2)
    finally:
        await database.dispose()
    [report] = [m for m in sink.messages if m.recipients == ["boss@example.com"]]
    day = (midnight - timedelta(days=1)).date()
    assert f"Daily report for {day}" == report.subject
    assert report.html is not None
    assert "new users" in report.html
    [attachment] = report.attachments
    assert (f"report-{day}.csv", "text/csv") == (attachment.filename, attachment.content_type)
    figures = dict(csv.reader(io.StringIO(attachment.content.decode())))
    assert {"new users": "2", "orders": "1", "mails sent": "1", "job failures": "0"}.items() <= (
        figures.items()
    )
