"""The dashboard in a real browser (Debian's Chromium through Playwright) against the app served
by uvicorn on loopback: sign in, filter, open a failed job, retry it and watch it succeed
without a reload, pause and resume a schedule, open a captured mail.

The run saves screenshots of the overview and of a job page (into ``OFFLOAD_SCREENSHOTS``
when set, else the test's folder); docs/dashboard.md shows two of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.integration.notify_server import free_port

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
# As in tests/browser/dashapp.py (not imported: it builds its app from the environment).
USER, PASSWORD = "ops", "browser-test-pw"

pytestmark = pytest.mark.timeout(120)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@dataclass
class Served:
    base: str
    marker: Path
    shots: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    marker = tmp_path / "payment-service-up"
    env = {
        **os.environ,
        "DASH_DB_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "DASH_MARKER": str(marker),
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.browser.dashapp:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/dashboard/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (tmp_path / "server.log").read_text()
                    raise RuntimeError(f"the app did not start: {text}") from None
                time.sleep(0.1)
        httpx.post(f"{base}/seed", timeout=5).raise_for_status()
        shots = Path(os.environ.get("OFFLOAD_SCREENSHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        yield Served(base, marker, shots)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def _signed_in(browser: Browser, served: Served) -> Page:
    context = await browser.new_context(
        http_credentials={"username": USER, "password": PASSWORD},
        base_url=served.base,
        viewport={"width": 1280, "height": 900},
    )
    page = await context.new_page()
    errors: list[str] = []
    # A script error or a refused inline script (CSP) would show here.
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" else None,
    )
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def test_a_stranger_gets_no_page(browser: Browser, served: Served) -> None:
    context = await browser.new_context(base_url=served.base)
    page = await context.new_page()
    # Chromium answers a Basic challenge it has no credentials for with an error page of its
    # own; the request the page would make shows the server's answer.
    with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
        await page.goto("/dashboard/")
    response = await context.request.get("/dashboard/jobs")
    assert 401 == response.status
    assert "Jobs" not in await response.text()
    await context.close()


async def test_operator_walkthrough(browser: Browser, served: Served) -> None:
    page = await _signed_in(browser, served)

    # Overview: the seeded jobs finish (one fails) and the page shows it without a reload.
    await page.goto("/dashboard/")
    await expect(page.locator("h1")).to_have_text("Overview")
    await expect(page.locator('[data-total="failed"]')).to_have_text("1", timeout=15_000)
    await expect(page.locator('[data-total="succeeded"]')).to_have_text("6", timeout=15_000)
    # The chart's recent minutes are read again at most every 10 s.
    await expect(page.locator("figure.chart").first).to_contain_text(
        "6 succeeded, 1 failed", timeout=25_000
    )
    await page.screenshot(path=str(served.shots / "dashboard-overview.png"), full_page=True)

    # Filter the list to failed jobs, open the one there.
    await page.click("nav >> text=Jobs")
    await page.select_option('select[name="state"]', "failed")
    await page.click('form.filters button[type="submit"]')
    rows = page.locator("table.jobs tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("payment service down for order 42")
    await rows.first.locator("a").click()
    await expect(page.locator(".job-state")).to_have_attribute("data-state", "failed")
    await expect(page.locator("pre.traceback")).to_contain_text("RuntimeError")
    await page.screenshot(path=str(served.shots / "dashboard-job.png"), full_page=True)

    # Retry it (confirmed in a dialog) once the service is back; it succeeds in place.
    served.marker.write_text("up")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("text=Retry")
    await expect(page.locator(".notice")).to_have_text("Queued again.")
    await expect(page.locator(".job-state")).to_have_attribute(
        "data-state", "succeeded", timeout=15_000
    )
    await expect(page.locator("#result")).to_contain_text("order 42 charged")

    # Pause and resume the schedule; a dismissed dialog changes nothing.
    await page.click("nav >> text=Schedules")
    row = page.locator('tr[data-schedule="hourly-greeting"]')
    page.once("dialog", lambda dialog: dialog.dismiss())
    await row.locator("text=Pause").click()
    await expect(row).not_to_contain_text("paused")
    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("text=Pause").click()
    await expect(page.locator(".notice")).to_have_text("Paused on every instance.")
    await expect(row).to_contain_text("paused")
    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("text=Resume").click()
    await expect(row).not_to_contain_text("paused")

    # Open the captured mail; its HTML renders in a sandboxed frame.
    await page.click("nav >> text=Mail")
    await page.click("text=Your receipt")
    await expect(page.locator("#text")).to_contain_text("Thanks!")
    frame = page.frame_locator("iframe.mail-html")
    await expect(frame.locator("h1")).to_have_text("Thanks!")

    assert [] == page.errors  # type: ignore[attr-defined]
