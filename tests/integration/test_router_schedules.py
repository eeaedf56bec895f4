"""The jobs router's schedule endpoints: list, pause, resume, behind the same auth."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from offload import Offload
from offload.fastapi import jobs_router
from tests.integration.test_router import AUTH, verify


@pytest.fixture
async def client(jobs: Offload) -> AsyncIterator[httpx.AsyncClient]:
    @jobs.periodic(every=timedelta(minutes=5), name="poll")
    async def poll() -> None: ...

    @jobs.periodic(cron="0 3 * * *", timezone="Europe/Berlin", name="nightly")
    async def nightly() -> None: ...

    app = FastAPI()
    app.include_router(jobs_router(jobs, auth=verify, prefix="/jobs"))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


class TestScheduleEndpoints:
    async def test_list_shows_state_and_next_times(self, client: httpx.AsyncClient) -> None:
        """GET /schedules (not read as a job id) lists each schedule with its next times."""
        response = await client.get("/jobs/schedules", headers=AUTH)
        assert 200 == response.status_code, response.text
        items = {i["name"]: i for i in response.json()["items"]}
        assert {"poll", "nightly"} == set(items)
        assert ("0 3 * * *", "Europe/Berlin", None) == (
            items["nightly"]["cron"],
            items["nightly"]["timezone"],
            items["nightly"]["every"],
        )
        times = [datetime.fromisoformat(t) for t in items["poll"]["next"]]
        assert [timedelta(minutes=5)] * 2 == [b - a for a, b in itertools.pairwise(times)]

    async def test_pause_and_resume(self, client: httpx.AsyncClient) -> None:
        """A pause is stored and listed; a resume clears it."""
        paused = await client.post("/jobs/schedules/poll/pause", headers=AUTH)
        assert (200, True) == (paused.status_code, paused.json()["paused"])
        listed = (await client.get("/jobs/schedules", headers=AUTH)).json()["items"]
        assert {"poll": True, "nightly": False} == {i["name"]: i["paused"] for i in listed}
        resumed = await client.post("/jobs/schedules/poll/resume", headers=AUTH)
        assert (200, False) == (resumed.status_code, resumed.json()["paused"])

    @pytest.mark.parametrize("action", ["pause", "resume"])
    async def test_unknown_name_is_404(self, client: httpx.AsyncClient, action: str) -> None:
        """An unknown name is a 404 whose detail lists the known ones."""
        response = await client.post(f"/jobs/schedules/pol/{action}", headers=AUTH)
        assert 404 == response.status_code
        assert (
            "no schedule named 'pol'; known schedules: nightly, poll" == response.json()["detail"]
        )

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/jobs/schedules"),
            ("POST", "/jobs/schedules/poll/pause"),
            ("POST", "/jobs/schedules/poll/resume"),
        ],
    )
    async def test_credentials_required(
        self, client: httpx.AsyncClient, method: str, path: str
    ) -> None:
        """Without credentials every schedule route answers 401 and changes nothing."""
        response = await client.request(method, path)
        assert 401 == response.status_code
        listed = (await client.get("/jobs/schedules", headers=AUTH)).json()["items"]
        assert not any(i["paused"] for i in listed)
