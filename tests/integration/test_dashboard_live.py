"""The dashboard's live view: pages redraw when the store's change feed moves (a long poll
on ``live/changes``), on SQLite, Redis and PostgreSQL, through the app's own auth."""

from __future__ import annotations

import asyncio
import time

import pytest

from offload.dashboard import live
from tests.integration.test_dashboard import CREDS, Dash, down_dashboard
from tests.integration.test_dashboard import dash as dash  # the fixture, used by name


async def _changes(dash: Dash, since: str | None = None) -> dict[str, object]:
    params = {} if since is None else {"since": since}
    response = await dash.client.get("/dashboard/live/changes", params=params, auth=CREDS)
    assert 200 == response.status_code, response.text
    assert "no-store" == response.headers["Cache-Control"]
    body: dict[str, object] = response.json()
    return body


async def test_pages_name_the_feed_they_follow(dash: Dash) -> None:
    page = (await dash.page("/")).text
    assert 'data-changes="/dashboard/live/changes"' in page


async def test_a_waiting_page_hears_of_an_enqueue_before_its_wait_ends(dash: Dash) -> None:
    first = await _changes(dash)
    assert first["changed"] is True
    token = str(first["token"])
    started = time.monotonic()
    waiting = asyncio.ensure_future(_changes(dash, token))
    await asyncio.sleep(0.1)
    await dash.ok.enqueue("there")
    moved = await waiting
    assert moved["changed"] is True
    assert token != moved["token"]
    assert time.monotonic() - started < live.FEED_WAIT


async def test_finishing_a_job_moves_the_feed(dash: Dash) -> None:
    await dash.ok.enqueue("there")
    token = str((await _changes(dash))["token"])
    await dash.run_all()
    moved = await _changes(dash, token)
    assert moved["changed"] is True


async def test_an_idle_wait_ends_unchanged(dash: Dash) -> None:
    token = str((await _changes(dash))["token"])
    started = time.monotonic()
    again = await _changes(dash, token)
    # A PostgreSQL token also moves with other writes on the server; the others stay put.
    if "postgresql" not in dash.jobs.store.url:
        assert {"token": token, "changed": False} == again
        assert time.monotonic() - started >= live.FEED_WAIT - 0.5


async def test_a_token_too_long_to_be_ours_counts_as_none(dash: Dash) -> None:
    assert (await _changes(dash, "x" * 500))["changed"] is True


async def test_the_feed_needs_credentials(dash: Dash) -> None:
    response = await dash.client.get("/dashboard/live/changes")
    assert 401 == response.status_code


async def test_a_store_without_a_feed_redraws_on_the_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "TIMER", 0.01)
    assert live.Change("", True) == await live.wait_for_change(object(), "t")  # type: ignore[arg-type]


async def test_a_store_that_is_down_answers_503_with_retry_after() -> None:
    async with down_dashboard() as c:
        headers = {"Authorization": "Bearer a-long-token"}
        response = await c.get("/d/live/changes", headers=headers)
    assert 503 == response.status_code
    assert "Retry-After" in response.headers
    assert "did not answer" in response.json()["detail"]
