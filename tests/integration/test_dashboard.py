"""The dashboard over HTTP on every store: pages, filters, actions, escaping, redaction, and
that no route answers without credentials nor acts without the CSRF token."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from uuid import uuid4

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from offload import ConfigError, Offload, Task, Worker
from offload.dashboard import basic_auth, bearer_auth
from offload.dashboard.security import CSP
from offload.email import Attachment, EmailMessage, Mailer
from offload.email.sink import MailSink, SinkHTTPServer
from offload.records import JobState
from offload.redaction import Secret
from offload.stores import JobFilter
from tests.stores.conftest import (
    REDIS_URL,
)

USER, PASSWORD = "admin", "correct-horse"
CREDS = (USER, PASSWORD)
EVIL = "<script>alert('x')</script>"


@dataclass
class Dash:
    jobs: Offload
    app: FastAPI
    router: APIRouter
    client: httpx.AsyncClient
    ok: Task[[str], str]
    boom: Task[[str], None]
    login: Task[[str, str], None]
    sink: MailSink

    async def page(self, path: str, **params: str) -> httpx.Response:
        response = await self.client.get(f"/dashboard{path}", params=params, auth=CREDS)
        assert 200 == response.status_code, response.text
        return response

    async def csrf(self) -> str:
        html = (await self.page("/")).text
        match = re.search(r'name="csrf" value="([^"]+)"', html) or re.search(
            r'data-csrf="([^"]+)"', html
        )
        if match is None:  # the overview has no form when there is nothing to act on
            html = (await self.page("/schedules")).text
            match = re.search(r'name="csrf" value="([^"]+)"', html)
        assert match is not None
        return match.group(1)

    async def post(self, path: str, *, confirm: bool = True) -> httpx.Response:
        data = {"csrf": await self.csrf(), "confirm": "yes" if confirm else ""}
        return await self.client.post(f"/dashboard{path}", data=data, auth=CREDS)

    async def run_all(self) -> None:
        await Worker(self.jobs, install_signals=False).run_until_idle()


@pytest.fixture
async def dash(store_url: str) -> AsyncIterator[Dash]:
    jobs = Offload(store_url, embedded_worker=False)

    @jobs.task(name="tests.ok")
    async def ok(name: str) -> str:
        return f"hello {name}"

    @jobs.task(name="tests.boom", retries=0, queue="risky")
    async def boom(why: str) -> None:
        raise RuntimeError(why)

    @jobs.task(name="tests.login", retries=0)
    async def login(user: str, password: Annotated[str, Secret]) -> None:
        return None

    jobs.schedule(ok, every=timedelta(hours=1), name="hourly-hello", args=["cron"])

    async with MailSink(port=0) as sink:
        mail_app = FastAPI()
        router = jobs.dashboard(auth=basic_auth(USER, PASSWORD), mail_sink=sink)
        mail_app.include_router(router, prefix="/dashboard")
        transport = httpx.ASGITransport(mail_app)
        async with jobs, httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield Dash(jobs, mail_app, router, c, ok, boom, login, sink)


class TestBuilding:
    def test_refuses_to_build_without_auth(self) -> None:
        """Leaving out ``auth`` is refused, naming both ways out."""
        with pytest.raises(ConfigError, match=r"auth=.*allow_anonymous=True"):
            Offload("memory://").dashboard()

    def test_anonymous_on_purpose_builds_and_warns(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="offload.dashboard"):
            Offload("memory://").dashboard(allow_anonymous=True)
        assert ["dashboard.anonymous"] == [getattr(r, "action", None) for r in caplog.records]

    def test_ready_made_checks_read_settings_and_refuse_short_secrets(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("OFFLOAD_DASHBOARD_PASSWORD", raising=False)
        with pytest.raises(ConfigError, match="OFFLOAD_DASHBOARD_PASSWORD"):
            basic_auth()
        monkeypatch.setenv("OFFLOAD_DASHBOARD_PASSWORD", "short")
        with pytest.raises(ConfigError, match="shorter than 8"):
            basic_auth()
        monkeypatch.setenv("OFFLOAD_DASHBOARD_PASSWORD", "long-enough-pw")
        monkeypatch.setenv("OFFLOAD_DASHBOARD_USER", "ops")
        assert "ops" == basic_auth().user
        monkeypatch.delenv("OFFLOAD_DASHBOARD_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="OFFLOAD_DASHBOARD_TOKEN"):
            bearer_auth()


def _dashboard_routes(router: APIRouter) -> list[APIRoute]:
    """The dashboard's own route table (mounted under /dashboard), so that a route added
    later is held to the same checks."""
    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 14
    return routes


def _concrete(path: str, job_id: str) -> str:
    values = {
        "job_id": job_id,
        "action": "retry",
        "task": "tests.boom",
        "name": "hourly-hello",
        "change": "pause",
        "message_id": "0" * 20,
        "index": "0",
        "name_": "dashboard.css",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


class TestSecurity:
    async def test_every_route_refuses_a_request_without_credentials(self, dash: Dash) -> None:
        """The route table is walked, so a route added later is held to it too."""
        job = await dash.boom.enqueue("x")
        for route in _dashboard_routes(dash.router):
            for method in route.methods or ():
                path = "/dashboard" + _concrete(route.path, job.id)
                for auth in (None, (USER, "wrong-password"), ("mallory", PASSWORD)):
                    response = await dash.client.request(method, path, auth=auth)
                    assert 401 == response.status_code, (method, path, auth)
                    assert response.headers["www-authenticate"].startswith("Basic")
        assert "queued" == (await dash.jobs.store.get(job.id)).state  # type: ignore[union-attr]

    async def test_every_action_refuses_a_request_without_the_csrf_token(self, dash: Dash) -> None:
        await dash.boom.enqueue("x")
        await dash.run_all()
        [failed] = (await dash.jobs.store.list(_failed(), 10)).jobs
        good = await dash.csrf()
        posts = [r for r in _dashboard_routes(dash.router) if "POST" in (r.methods or ())]
        assert len(posts) >= 3
        for route in posts:
            path = "/dashboard" + _concrete(route.path, failed.id)
            for data in ({}, {"csrf": "forged", "confirm": "yes"}, {"confirm": "yes"}):
                response = await dash.client.post(path, data=data, auth=CREDS)
                assert 403 == response.status_code, (path, data)
            cross = await dash.client.post(
                path,
                data={"csrf": good, "confirm": "yes"},
                auth=CREDS,
                headers={"Sec-Fetch-Site": "cross-site"},
            )
            assert 403 == cross.status_code, path
        after = await dash.jobs.store.get(failed.id)
        assert after is not None
        assert "failed" == after.state
        assert (
            not (await dash.jobs.store.schedule_states(["hourly-hello"]))
            .get("hourly-hello", _Unpaused())
            .paused
        )

    async def test_pages_carry_a_strict_policy(self, dash: Dash) -> None:
        for path in ("/", "/jobs", "/schedules", "/mail"):
            response = await dash.page(path)
            assert CSP == response.headers["content-security-policy"]
            assert "'unsafe-inline'" not in CSP
            assert "frame-ancestors 'none'" in CSP
            assert "DENY" == response.headers["x-frame-options"]
            assert "no-store" == response.headers["cache-control"]
            assert "<script>" not in response.text  # only the external file, no inline code
            assert re.search(r'<script src="[^"]+/static/dashboard.js" defer>', response.text)

    async def test_job_values_are_escaped_and_secrets_redacted(self, dash: Dash) -> None:
        job = await dash.boom.enqueue(EVIL)
        secret = await dash.login.enqueue("bob", "hunter2-very-secret")
        await dash.run_all()
        page = (await dash.page(f"/jobs/{job.id}")).text
        assert EVIL not in page
        assert "&lt;script&gt;alert(" in page
        listing = (await dash.page("/jobs")).text
        assert EVIL not in listing
        shown = (await dash.page(f"/jobs/{secret.id}")).text
        assert "hunter2-very-secret" not in shown
        assert "bob" in shown


class _Unpaused:
    paused = False


def _failed() -> JobFilter:
    return JobFilter(states=(JobState.FAILED,))


class TestPages:
    async def test_overview_counts_charts_and_workers(self, dash: Dash) -> None:
        for i in range(3):
            await dash.ok.enqueue(str(i))
        await dash.boom.enqueue("bad")
        await dash.ok.enqueue("later")
        await dash.run_all()
        await dash.ok.enqueue("waiting")
        html = (await dash.page("/")).text
        assert '<td data-total="succeeded">4</td>' in html
        assert '<td data-total="failed">1</td>' in html
        assert '<td data-total="queued">1</td>' in html
        assert "4 succeeded, 1 failed" in html
        assert "20.0% of 5 failed" in html
        assert html.count('class="bar-succeeded"') >= 1
        live = (await dash.page("/live/overview")).text
        assert "<html" not in live
        assert '<td data-total="queued">1</td>' in live

    async def test_job_list_filters_and_pages(self, dash: Dash) -> None:
        first = await dash.ok.enqueue("a")
        for i in range(60):
            await dash.ok.enqueue(str(i))
        keyed = await dash.ok.options(key="order-42").enqueue("k")
        await dash.boom.enqueue("b")
        await dash.run_all()
        page = (await dash.page("/jobs", task="tests.ok")).text
        assert 50 == page.count("/dashboard/jobs/0")
        older = re.search(r'rel="next" href="([^"]+)"', page)
        assert older is not None
        second = await dash.client.get(older.group(1).replace("&amp;", "&"), auth=CREDS)
        assert first.id in second.text
        assert 12 == second.text.count("/dashboard/jobs/0")
        failed = (await dash.page("/jobs", state="failed")).text
        assert 1 == failed.count("/dashboard/jobs/0")
        assert "RuntimeError: b" in failed
        by_queue = (await dash.page("/jobs", queue="risky")).text
        assert 1 == by_queue.count("/dashboard/jobs/0")
        by_id = (await dash.page("/jobs", q=first.id)).text
        assert 1 == by_id.count("/dashboard/jobs/0")
        by_key = (await dash.page("/jobs", q="order-42")).text
        assert [keyed.id] == re.findall(r"/dashboard/jobs/([0-9a-f-]{36})", by_key)
        future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        assert 0 == (await dash.page("/jobs", since=future)).text.count("/dashboard/jobs/0")
        recent = (await dash.page("/jobs", since="1h", state="failed")).text
        assert 1 == recent.count("/dashboard/jobs/0")

    async def test_bad_filters_answer_422_naming_the_field(self, dash: Dash) -> None:
        for params, field in (
            ({"since": "yesterday-ish"}, "since"),
            ({"until": "13/13/2026"}, "until"),
            ({"state": "lost"}, "state"),
            ({"cursor": "not-a-cursor"}, "cursor"),
        ):
            response = await dash.client.get("/dashboard/jobs", params=params, auth=CREDS)
            assert 422 == response.status_code, params
            assert f"{field}:" in response.text

    async def test_job_page_shows_result_error_and_timings(self, dash: Dash) -> None:
        good = await dash.ok.enqueue("ann")
        bad = await dash.boom.enqueue("broken pipe")
        await dash.run_all()
        page = (await dash.page(f"/jobs/{good.id}")).text
        assert "&#34;hello ann&#34;" in page or "&quot;hello ann&quot;" in page
        assert "data-final" in page
        assert "(ran " in page
        failed = (await dash.page(f"/jobs/{bad.id}")).text
        assert "RuntimeError" in failed
        assert "broken pipe" in failed
        assert "Traceback" in failed
        missing = await dash.client.get(f"/dashboard/jobs/{uuid4()}", auth=CREDS)
        assert 404 == missing.status_code
        assert "not found" in missing.text

    async def test_job_page_lists_the_error_of_every_attempt(self, dash: Dash) -> None:
        """A job that failed twice, then succeeded, shows both errors, newest first, each
        with its attempt and traceback."""
        tries: list[int] = []

        @dash.jobs.task(name="tests.flaky", retries=2, backoff=0.0)
        async def flaky() -> str:
            tries.append(1)
            if len(tries) < 3:
                raise RuntimeError(f"flaky try {len(tries)}")
            return "fine"

        job = await flaky.enqueue()
        await dash.run_all()
        assert 3 == len(tries)
        page = (await dash.page(f"/jobs/{job.id}")).text
        assert "Attempts" in page
        second, first = page.index("flaky try 2"), page.index("flaky try 1")
        assert second < first
        assert 'data-attempt="2"' in page
        assert 'data-attempt="1"' in page
        assert 2 == page.count('<pre class="traceback">')
        assert "RuntimeError" in page

    async def test_a_running_job_refreshes_itself(self, dash: Dash) -> None:
        job = await dash.ok.enqueue("soon")
        page = (await dash.page(f"/jobs/{job.id}")).text
        assert f'data-live="/dashboard/live/jobs/{job.id}"' in page
        await dash.run_all()
        live = (await dash.page(f"/live/jobs/{job.id}")).text
        assert 'data-state="succeeded"' in live
        assert "data-final" in live

    async def test_schedules_page_pause_and_resume(self, dash: Dash) -> None:
        page = (await dash.page("/schedules")).text
        assert "hourly-hello" in page
        assert "every 1h" in page or "every" in page
        asked = await dash.post("/schedules/hourly-hello/pause", confirm=False)
        assert 200 == asked.status_code
        assert "Pause schedule hourly-hello?" in asked.text
        assert (
            not (await dash.jobs.store.schedule_states(["hourly-hello"]))
            .get("hourly-hello", _Unpaused())
            .paused
        )
        done = await dash.post("/schedules/hourly-hello/pause")
        assert 303 == done.status_code
        assert (await dash.jobs.store.schedule_states(["hourly-hello"]))["hourly-hello"].paused
        assert "state-paused" in (await dash.page("/schedules")).text
        await dash.post("/schedules/hourly-hello/resume")
        assert not (await dash.jobs.store.schedule_states(["hourly-hello"]))["hourly-hello"].paused
        unknown = await dash.post("/schedules/nope/pause")
        assert 404 == unknown.status_code


class TestActions:
    async def test_retry_cancel_delete_are_confirmed_logged_and_applied(
        self, dash: Dash, caplog: pytest.LogCaptureFixture
    ) -> None:
        bad = await dash.boom.enqueue("once")
        await dash.run_all()
        asked = await dash.post(f"/jobs/{bad.id}/retry", confirm=False)
        assert 200 == asked.status_code
        assert f"Retry job {bad.id}?" in asked.text
        assert "failed" == (await dash.jobs.store.get(bad.id)).state  # type: ignore[union-attr]
        with caplog.at_level(logging.INFO, logger="offload.admin"):
            retried = await dash.post(f"/jobs/{bad.id}/retry")
        assert 303 == retried.status_code
        assert f"/dashboard/jobs/{bad.id}?done=retry" == retried.headers["location"]
        assert "queued" == (await dash.jobs.store.get(bad.id)).state  # type: ignore[union-attr]
        assert any(getattr(r, "actor", None) == USER for r in caplog.records)
        cancelled = await dash.post(f"/jobs/{bad.id}/cancel")
        assert 303 == cancelled.status_code
        assert "cancelled" == (await dash.jobs.store.get(bad.id)).state  # type: ignore[union-attr]
        again = await dash.post(f"/jobs/{bad.id}/cancel")
        assert 409 == again.status_code
        assert "already cancelled" in again.text
        deleted = await dash.post(f"/jobs/{bad.id}/delete")
        assert 303 == deleted.status_code
        assert await dash.jobs.store.get(bad.id) is None

    async def test_retry_all_failed_of_one_task(self, dash: Dash) -> None:
        for i in range(3):
            await dash.boom.enqueue(str(i))
        await dash.ok.enqueue("fine")
        await dash.run_all()
        listing = (await dash.page("/jobs", state="failed", task="tests.boom")).text
        assert "Retry all failed jobs of tests.boom" in listing
        response = await dash.post("/tasks/tests.boom/retry-failed")
        assert 303 == response.status_code
        assert "retried=3" in response.headers["location"]
        after = await dash.client.get(response.headers["location"], auth=CREDS)
        assert "3 failed jobs queued again." in after.text
        assert not (await dash.jobs.store.list(_failed(), 10)).jobs


class TestMail:
    async def test_captured_mail_with_html_sandboxed_and_attachments(self, dash: Dash) -> None:
        mailer = Mailer("127.0.0.1", dash.sink.port, tls="none", sender="app@example.com")
        await mailer.send(
            EmailMessage(
                to=["bob@example.com"],
                subject="Your <b>report</b>",
                text="plain words",
                html="<p>rich words</p><script>alert(1)</script>",
                attachments=[
                    Attachment(filename="r.csv", content_type="text/csv", content=b"a,b\n1,2\n")
                ],
            )
        )
        listing = (await dash.page("/mail")).text
        assert "Your &lt;b&gt;report&lt;/b&gt;" in listing
        link = re.search(r'href="(/dashboard/mail/[0-9a-f]{20})"', listing)
        assert link is not None
        message = (await dash.client.get(link.group(1), auth=CREDS)).text
        assert "plain words" in message
        assert '<iframe class="mail-html" sandbox src=' in message
        html = await dash.client.get(link.group(1) + "/html", auth=CREDS)
        assert "sandbox" in html.headers["content-security-policy"]
        assert "script-src" not in html.headers["content-security-policy"]
        assert "SAMEORIGIN" == html.headers["x-frame-options"]
        assert "<p>rich words</p>" in html.text
        attachment = await dash.client.get(link.group(1) + "/attachments/0", auth=CREDS)
        assert b"a,b\n1,2\n" == attachment.content
        assert attachment.headers["content-disposition"].startswith("attachment;")
        assert "application/octet-stream" == attachment.headers["content-type"]


async def test_mail_page_reads_a_sink_of_another_process_by_url(jobs: Offload) -> None:
    async with MailSink(port=0) as sink:
        view = SinkHTTPServer(sink, port=0)
        await view.start()
        try:
            mailer = Mailer("127.0.0.1", sink.port, tls="none", sender="app@example.com")
            await mailer.send(EmailMessage(to=["eve@example.com"], subject="Hi", text="x"))
            app = FastAPI()
            app.include_router(
                jobs.dashboard(allow_anonymous=True, mail_sink=f"http://127.0.0.1:{view.port}"),
                prefix="/d",
            )
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                listing = await c.get("/d/mail")
                assert "eve@example.com" in listing.text
        finally:
            await view.stop()
    app = FastAPI()
    app.include_router(
        jobs.dashboard(allow_anonymous=True, mail_sink="http://127.0.0.1:9"), prefix="/d"
    )
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        down = await c.get("/d/mail")
        assert 200 == down.status_code
        assert "did not answer" in down.text


@asynccontextmanager
async def down_dashboard() -> AsyncIterator[httpx.AsyncClient]:
    """A client of a dashboard at /d (bearer token ``a-long-token``) whose store is down:
    a Redis URL on a port nothing listens on."""
    jobs = Offload(f"{REDIS_URL.rsplit(':', 1)[0]}:1/0?op_timeout=0.5", embedded_worker=False)
    app = FastAPI()
    app.include_router(jobs.dashboard(auth=bearer_auth("a-long-token")), prefix="/d")
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_store_that_is_down_answers_503_not_500(tmp_path: Path) -> None:
    async with down_dashboard() as c:
        headers = {"Authorization": "Bearer a-long-token"}
        response = await c.get("/d/", headers=headers)
        assert 503 == response.status_code
        assert "Retry-After" in response.headers
        assert "did not answer" in response.text
        refused = await c.get("/d/", headers={"Authorization": "Bearer wrong-token"})
        assert 401 == refused.status_code


async def test_the_chart_reads_closed_minutes_once() -> None:
    """Each refresh asks the store only for the last minutes; closed ones come from memory,
    and the figures are the same as a full read's."""
    from offload.dashboard.views import CHART_SECONDS, ActivityCache
    from offload.stores.base import Activity

    class Store:
        def __init__(self) -> None:
            self.asked: list[float] = []
            self.buckets = [Activity(60.0 * m, m, 1, 0) for m in range(100, 161)]

        async def activity(self, since: float, bucket: float) -> list[Activity]:
            self.asked.append(since)
            return [b for b in self.buckets if b.start + bucket > since]

    store = Store()
    cache = ActivityCache()
    now = 160 * 60.0 + 30
    first = await cache.read(store, now)
    assert [now - CHART_SECONDS] == store.asked
    again = await cache.read(store, now + 2)  # within RECENT_EVERY: nothing asked
    assert 1 == len(store.asked)
    assert [(b.start, b.succeeded) for b in first] == [(b.start, b.succeeded) for b in again]
    await cache.read(store, now + 12)
    assert 158 * 60.0 == store.asked[-1]
    later = await cache.read(store, now + 65)  # a minute on: 158 closed as this read ends
    assert 158 * 60.0 == store.asked[-1]
    assert later[-1].start == 160 * 60.0
    # The same figures, the oldest minute having left the hour.
    assert [(b.start, b.succeeded) for b in first][1:] == [(b.start, b.succeeded) for b in later]
    await cache.read(store, now + 77)
    assert 159 * 60.0 == store.asked[-1]
