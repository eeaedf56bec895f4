"""The reference service: request lines, correlated job lines, metrics behind the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LogLines
from tests.integration.test_notify_service import (
    ADA,
    AUTH,
    TOKEN,
    environment,
    fresh_service,
    until_finished,
)

__all__ = ["environment"]  # the fixture, shared with the service's own tests


@pytest.fixture
async def client(environment: None, json_logs: LogLines) -> AsyncIterator[httpx.AsyncClient]:
    service = fresh_service()
    transport = httpx.ASGITransport(service.app)
    async with (
        service.app.router.lifespan_context(service.app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


class TestNotifyService:
    async def test_registration_is_traceable_from_request_to_job(
        self, client: httpx.AsyncClient, json_logs: LogLines
    ) -> None:
        """The /register request line and the welcome job's lines share the request id, and
        the API token never appears in the logs."""
        response = await client.post("/register", json=ADA, headers={"X-Request-ID": "reg-1"})
        assert 202 == response.status_code
        assert "reg-1" == response.headers["x-request-id"]
        job = await until_finished(client, response.json()["status_url"])
        assert "succeeded" == job["state"]
        assert "reg-1" == job["meta"]["request_id"]
        lines = json_logs()
        (request,) = [
            line
            for line in lines
            if line.get("action") == "http.request" and line["path"] == "/register"
        ]
        assert ("/register", 202, "reg-1") == (
            request["route"],
            request["status"],
            request["request_id"],
        )
        job_lines = [line for line in lines if line.get("job_id") == job["id"]]
        assert {"job.enqueued", "job.started", "job.succeeded", None} == {
            line.get("action") for line in job_lines
        }
        assert {"reg-1"} == {line["request_id"] for line in job_lines}
        assert TOKEN not in str(lines)

    async def test_metrics_need_the_token(self, client: httpx.AsyncClient) -> None:
        assert 401 == (await client.get("/metrics")).status_code
        response = await client.get("/metrics", headers=AUTH)
        assert 200 == response.status_code
        names = {family.name for family in text_string_to_metric_families(response.text)}
        assert {"offload_jobs_enqueued", "offload_queue_depth", "offload_workers"} <= names

    async def test_metrics_count_jobs_that_ran_before_the_first_scrape(
        self, client: httpx.AsyncClient
    ) -> None:
        """A job enqueued and run by the embedded worker before anyone reads /metrics is
        counted at the first scrape, and the embedded worker shows in offload_workers."""
        response = await client.post("/register", json=ADA)
        assert 202 == response.status_code
        job = await until_finished(client, response.json()["status_url"])
        assert "succeeded" == job["state"]

        first = await client.get("/metrics", headers=AUTH)
        assert 200 == first.status_code
        samples = {
            (sample.name, sample.labels.get("task")): sample.value
            for family in text_string_to_metric_families(first.text)
            for sample in family.samples
        }
        task = "notify.send_welcome"
        assert 1 == samples[("offload_jobs_enqueued_total", task)]
        assert 1 == samples[("offload_jobs_started_total", task)]
        assert 1 == samples[("offload_jobs_succeeded_total", task)]
        assert 1 == samples[("offload_job_duration_seconds_count", task)]
        assert 1 == samples[("offload_workers", None)]
