"""The jobs router: authenticated status, listing, cancel and retry over HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from offload import ConfigError, JobContext, Offload, Task, Worker
from offload.fastapi import jobs_router
from offload.stores import ClaimRequest

TOKEN = "s3cret"
AUTH = {"X-Token": TOKEN}


def verify(x_token: Annotated[str | None, Header()] = None) -> None:
    if x_token != TOKEN:
        raise HTTPException(401, detail="missing or wrong X-Token")


@dataclass
class Api:
    jobs: Offload
    client: httpx.AsyncClient
    ok: Task[[int], dict[str, int]]
    boom: Task[[], None]

    async def enqueue_ok(self, n: int = 1) -> str:
        return (await self.ok.enqueue(n)).id

    async def run_all(self) -> None:
        await Worker(self.jobs, install_signals=False).run_until_idle()

    async def get(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/jobs/{job_id}", headers=AUTH)
        assert 200 == response.status_code, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def api(jobs: Offload) -> AsyncIterator[Api]:
    @jobs.task(name="tests.ok")
    async def ok(ctx: JobContext, n: int) -> dict[str, int]:
        await ctx.progress(1.0, "done")
        return {"n": n}

    @jobs.task(name="tests.boom", retries=0, queue="risky")
    def boom() -> None:
        raise RuntimeError("kaboom")

    app = FastAPI()
    app.include_router(jobs_router(jobs, auth=verify, prefix="/jobs"))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(jobs, client, ok, boom)


class TestBuilding:
    def test_refuses_to_build_without_auth(self, jobs: Offload) -> None:
        """Leaving out ``auth`` is refused, and the message names both ways out."""
        with pytest.raises(ConfigError, match=r"auth=.*allow_anonymous=True"):
            jobs_router(jobs)

    def test_anonymous_on_purpose_builds_and_warns(
        self, jobs: Offload, caplog: pytest.LogCaptureFixture
    ) -> None:
        """``allow_anonymous=True`` builds the router and logs a warning with an action key."""
        with caplog.at_level(logging.WARNING, logger="offload.fastapi"):
            router = jobs_router(jobs, allow_anonymous=True)
        assert 8 == len(router.routes)  # five job routes, three schedule routes
        assert ["fastapi.router_anonymous"] == [getattr(r, "action", None) for r in caplog.records]

    async def test_anonymous_router_serves_without_credentials(self, jobs: Offload) -> None:
        """An anonymous router answers without any header."""
        app = FastAPI()
        app.include_router(jobs_router(jobs, allow_anonymous=True), prefix="/jobs")
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/jobs/")
        assert (200, []) == (response.status_code, response.json()["items"])

    def test_openapi_documents_the_models(self, jobs: Offload) -> None:
        """Each route has a typed response model in the OpenAPI schema."""
        app = FastAPI()
        app.include_router(jobs_router(jobs, auth=verify, prefix="/jobs"))
        schema = app.openapi()
        assert {
            "/jobs",
            "/jobs/{job_id}",
            "/jobs/{job_id}/cancel",
            "/jobs/{job_id}/retry",
            "/jobs/schedules",
            "/jobs/schedules/{name}/pause",
            "/jobs/schedules/{name}/resume",
        } == set(schema["paths"])
        ok = schema["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]
        assert "#/components/schemas/JobOut" == ok["content"]["application/json"]["schema"]["$ref"]
        assert {"JobOut", "JobPageOut", "JobErrorOut", "ProgressOut", "Detail"} <= set(
            schema["components"]["schemas"]
        )


class TestAuth:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/jobs"),
            ("GET", "/jobs/some-id"),
            ("POST", "/jobs/some-id/cancel"),
            ("POST", "/jobs/some-id/retry"),
            ("DELETE", "/jobs/some-id"),
        ],
    )
    async def test_every_route_needs_credentials(self, api: Api, method: str, path: str) -> None:
        """Without the token every route answers 401, before looking anything up."""
        response = await api.client.request(method, path)
        assert (401, {"detail": "missing or wrong X-Token"}) == (
            response.status_code,
            response.json(),
        )

    async def test_wrong_credentials_are_refused(self, api: Api) -> None:
        """A wrong token is no better than none."""
        response = await api.client.get("/jobs", headers={"X-Token": "guess"})
        assert 401 == response.status_code


class TestGetJob:
    async def test_unknown_id_is_404_with_detail(self, api: Api) -> None:
        """A missing job is a 404 with a JSON detail, never a 500."""
        response = await api.client.get("/jobs/nope", headers=AUTH)
        assert (404, {"detail": "job nope not found"}) == (response.status_code, response.json())

    async def test_queued_job(self, api: Api) -> None:
        """A fresh job shows its task, queue, attempts and ISO timestamps."""
        job_id = await api.enqueue_ok(3)
        body = await api.get(job_id)
        assert {
            "id": job_id,
            "task": "tests.ok",
            "queue": "default",
            "state": "queued",
            "priority": 0,
            "attempt": 0,
            "max_attempts": 4,
            "cancel_requested": False,
            "waiting_reason": None,
            "key": None,
            "started_at": None,
            "finished_at": None,
            "progress": None,
            "result": None,
            "error": None,
            "meta": {},
            "steps": None,
        } == {k: v for k, v in body.items() if k not in {"enqueued_at", "run_at"}}
        assert datetime.fromisoformat(body["enqueued_at"]).tzinfo is not None

    async def test_succeeded_job_shows_result_and_progress(self, api: Api) -> None:
        """After it ran, the decoded result, last progress and finish time are shown."""
        job_id = await api.enqueue_ok(7)
        await api.run_all()
        body = await api.get(job_id)
        assert ("succeeded", 1, {"n": 7}, {"fraction": 1.0, "message": "done"}) == (
            body["state"],
            body["attempt"],
            body["result"],
            body["progress"],
        )
        started = datetime.fromisoformat(body["started_at"])
        assert started <= datetime.fromisoformat(body["finished_at"])

    async def test_failed_job_shows_the_error(self, api: Api) -> None:
        """A failed job carries the exception type, message and traceback."""
        job_id = (await api.boom.enqueue()).id
        await api.run_all()
        body = await api.get(job_id)
        error = body["error"]
        assert ("failed", "RuntimeError", "kaboom") == (
            body["state"],
            error["type"],
            error["message"],
        )
        assert "kaboom" in error["traceback"]


class TestListJobs:
    async def test_filters_by_state_task_and_queue(self, api: Api) -> None:
        """Filters combine; each may be repeated to match any of several values."""
        ok_id = await api.enqueue_ok()
        boom_id = (await api.boom.enqueue()).id
        await api.run_all()
        queued_id = await api.enqueue_ok()

        async def ids(**params: Any) -> list[str]:
            response = await api.client.get("/jobs", params=params, headers=AUTH)
            assert 200 == response.status_code, response.text
            return [item["id"] for item in response.json()["items"]]

        assert [queued_id, boom_id, ok_id] == await ids()
        assert [boom_id] == await ids(state="failed")
        assert [boom_id, ok_id] == await ids(state=["failed", "succeeded"])
        assert [queued_id, ok_id] == await ids(task="tests.ok")
        assert [boom_id] == await ids(queue="risky")
        assert [queued_id, boom_id, ok_id] == await ids(queue=["risky", "default"])
        assert [] == await ids(task="tests.ok", queue="risky")

    async def test_pages_cover_every_job_once(self, api: Api) -> None:
        """Following ``next_cursor`` visits all jobs newest first; the last page has none."""
        enqueued = [await api.enqueue_ok(n) for n in range(5)]
        seen: list[str] = []
        cursors: list[str | None] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            body = (await api.client.get("/jobs", params=params, headers=AUTH)).json()
            seen.extend(item["id"] for item in body["items"])
            cursors.append(body["next_cursor"])
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert list(reversed(enqueued)) == seen
        assert 3 == len(cursors)

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"state": "bogus"}, "state"),
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"cursor": "not a cursor!"}, "cursor"),
            ({"cursor": "a"}, "cursor"),  # right alphabet, but not valid base64
            ({"cursor": "_w"}, "cursor"),  # decodes, but not to text
        ],
    )
    async def test_bad_filter_is_422_naming_the_field(
        self, api: Api, params: dict[str, Any], field: str
    ) -> None:
        """A bad query parameter is a 422 whose error location names it."""
        response = await api.client.get("/jobs", params=params, headers=AUTH)
        assert 422 == response.status_code
        # A repeatable parameter also gives the index of the bad value: ["query", "state", 0].
        assert [["query", field]] == [e["loc"][:2] for e in response.json()["detail"]]


class TestCancel:
    async def test_cancel_queued_job(self, api: Api) -> None:
        """A queued job is cancelled at once and never runs."""
        job_id = await api.enqueue_ok()
        response = await api.client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
        assert (200, "cancelled") == (response.status_code, response.json()["state"])
        await api.run_all()
        assert "cancelled" == (await api.get(job_id))["state"]

    async def test_cancel_running_job_asks_the_worker(self, api: Api) -> None:
        """A running job stays running with ``cancel_requested`` set for its worker to see."""
        job_id = await api.enqueue_ok()
        await api.jobs.store.claim(ClaimRequest("w-test", 30.0))
        response = await api.client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
        body = response.json()
        assert (200, "running", True) == (
            response.status_code,
            body["state"],
            body["cancel_requested"],
        )

    async def test_cancel_finished_job_is_409(self, api: Api) -> None:
        """A job that already finished cannot be cancelled; the detail says why."""
        job_id = await api.enqueue_ok()
        await api.run_all()
        response = await api.client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
        assert 409 == response.status_code
        assert f"job {job_id} is already succeeded" in response.json()["detail"]

    async def test_cancel_unknown_job_is_404(self, api: Api) -> None:
        """Cancelling a job that does not exist is a 404."""
        response = await api.client.post("/jobs/nope/cancel", headers=AUTH)
        assert (404, {"detail": "job nope not found"}) == (response.status_code, response.json())


class TestRetry:
    async def test_retry_failed_job_queues_it_again(self, api: Api) -> None:
        """A failed job goes back to queued with a fresh attempt budget, and runs again."""
        job_id = (await api.boom.enqueue()).id
        await api.run_all()
        response = await api.client.post(f"/jobs/{job_id}/retry", headers=AUTH)
        body = response.json()
        assert (200, "queued", 0, None) == (
            response.status_code,
            body["state"],
            body["attempt"],
            body["error"],
        )
        await api.run_all()
        again = await api.get(job_id)
        assert ("failed", 1) == (again["state"], again["attempt"])

    async def test_retry_cancelled_job(self, api: Api) -> None:
        """A cancelled job can be retried, and then succeeds."""
        job_id = await api.enqueue_ok(9)
        await api.client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
        response = await api.client.post(f"/jobs/{job_id}/retry", headers=AUTH)
        assert (200, "queued") == (response.status_code, response.json()["state"])
        await api.run_all()
        assert {"n": 9} == (await api.get(job_id))["result"]

    @pytest.mark.parametrize("finish", [True, False])
    async def test_retry_in_a_state_that_forbids_it_is_409(self, api: Api, finish: bool) -> None:
        """Only failed or cancelled jobs can be retried; others get 409 naming the state."""
        job_id = await api.enqueue_ok()
        if finish:
            await api.run_all()
        response = await api.client.post(f"/jobs/{job_id}/retry", headers=AUTH)
        state = "succeeded" if finish else "queued"
        assert (409, f"job {job_id} is {state}; only failed or cancelled jobs can be retried") == (
            response.status_code,
            response.json()["detail"],
        )

    async def test_retry_unknown_job_is_404(self, api: Api) -> None:
        """Retrying a job that does not exist is a 404."""
        response = await api.client.post("/jobs/nope/retry", headers=AUTH)
        assert 404 == response.status_code


class TestDelete:
    async def test_a_finished_job_is_deleted_and_then_404(self, api: Api) -> None:
        """DELETE answers 204 with no body; the job is gone afterwards."""
        job_id = await api.enqueue_ok()
        await api.run_all()
        response = await api.client.delete(f"/jobs/{job_id}", headers=AUTH)
        assert (204, b"") == (response.status_code, response.content)
        assert 404 == (await api.client.get(f"/jobs/{job_id}", headers=AUTH)).status_code
        again = await api.client.delete(f"/jobs/{job_id}", headers=AUTH)
        assert (404, {"detail": f"job {job_id} not found"}) == (again.status_code, again.json())

    async def test_a_queued_job_is_cancelled_and_deleted_and_never_runs(self, api: Api) -> None:
        job_id = await api.enqueue_ok(5)
        assert 204 == (await api.client.delete(f"/jobs/{job_id}", headers=AUTH)).status_code
        await api.run_all()
        assert 404 == (await api.client.get(f"/jobs/{job_id}", headers=AUTH)).status_code

    async def test_a_running_job_is_409_naming_the_fix(self, api: Api) -> None:
        job_id = await api.enqueue_ok()
        await api.jobs.store.claim(ClaimRequest("w", 30.0))
        response = await api.client.delete(f"/jobs/{job_id}", headers=AUTH)
        assert (
            409,
            f"job {job_id} is running; only finished jobs can be deleted (cancel it "
            "and let it stop first)",
        ) == (response.status_code, response.json()["detail"])

    async def test_needs_credentials(self, api: Api) -> None:
        assert 401 == (await api.client.delete("/jobs/some-id")).status_code


class TestStoreOutage:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/jobs"),
            ("GET", "/jobs/some-id"),
            ("POST", "/jobs/some-id/cancel"),
            ("POST", "/jobs/some-id/retry"),
        ],
    )
    async def test_unreachable_store_is_503(self, api: Api, method: str, path: str) -> None:
        """When the store is down the API says so with a 503, never a 500."""
        await api.jobs.store.close()
        response = await api.client.request(method, path, headers=AUTH)
        assert (503, "the job store is unavailable; retry later") == (
            response.status_code,
            response.json()["detail"],
        )
