"""A request id follows a request into its jobs' log lines and into the jobs they enqueue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI

from offload import Job, JobContext, JobState, Offload, Worker
from offload.fastapi import Background, RequestLogMiddleware
from offload.stores.base import JobFilter
from tests.conftest import LogLines

task_log = logging.getLogger("tests.billing")


def build(jobs: Offload) -> FastAPI:
    """A service whose task logs, enqueues a follow-up job, then fails on every attempt."""

    @jobs.task(name="tests.audit")
    async def audit(ctx: JobContext, note: str) -> None:
        ctx.logger.info("audit %s", note)

    @jobs.task(name="tests.charge", retries=1, backoff=0)
    async def charge(ctx: JobContext, amount: int) -> None:
        task_log.info("charging %d", amount)
        ctx.logger.warning("attempt %d of the charge", ctx.attempt)
        if ctx.attempt == 1:
            await audit.enqueue(f"charge {amount}")
        raise RuntimeError("card declined")

    app = FastAPI()
    app.add_middleware(RequestLogMiddleware)

    @app.post("/charges/{amount}")
    async def create(amount: int, background: Background) -> dict[str, str]:
        job = await background.add_task(charge, amount)
        return {"job_id": job.id}

    return app


async def run_until(jobs: Offload, done: Callable[[], Awaitable[bool]]) -> None:
    """Run a real worker until ``done()`` holds (for at most 20 s)."""
    worker = Worker(jobs, concurrency=4, install_signals=False)
    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(1000):
            if await done():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the jobs did not finish within 20 s")
    finally:
        worker.stop()
        await runner


async def wait_finished(job: Job[Any]) -> bool:
    await job.refresh()
    return job.state.finished


class TestRequestToJobs:
    async def test_request_id_in_every_line_of_the_job_and_its_child(
        self, jobs: Offload, json_logs: LogLines
    ) -> None:
        """The id sent in X-Request-ID appears on the request line and on every line about
        the job: enqueue, each start, the task's own lines, the retry and the failure; the
        job it enqueued carries the request id and its parent's id."""
        app = build(jobs)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            response = await client.post("/charges/42", headers={"X-Request-ID": "req-3am.1"})
        assert 200 == response.status_code
        assert "req-3am.1" == response.headers["x-request-id"]
        job = await jobs.get(response.json()["job_id"])
        assert job is not None
        assert {"request_id": "req-3am.1"} == job.meta

        async def both_finished() -> bool:
            page = await jobs.store.list(JobFilter(tasks=("tests.audit",)), 10)
            children_done = bool(page.jobs) and all(r.state.finished for r in page.jobs)
            return await wait_finished(job) and children_done

        await run_until(jobs, both_finished)
        assert JobState.FAILED == job.state

        lines = json_logs()
        (request,) = [line for line in lines if line.get("action") == "http.request"]
        assert {
            "method": "POST",
            "path": "/charges/42",
            "route": "/charges/{amount}",
            "status": 200,
            "request_id": "req-3am.1",
            "logger": "offload.http",
            "level": "info",
        }.items() <= request.items()
        assert request["duration"] >= 0

        about_job = [line for line in lines if line.get("job_id") == job.id]
        actions = [line.get("action") for line in about_job]
        assert ["job.enqueued", "job.started", "job.retry", "job.started", "job.failed"] == [
            a for a in actions if a is not None
        ]
        own = [line for line in about_job if line.get("action") is None]
        assert [
            ("tests.billing", "charging 42", 1),
            ("offload.task.tests.charge", "attempt 1 of the charge", 1),
            ("tests.billing", "charging 42", 2),
            ("offload.task.tests.charge", "attempt 2 of the charge", 2),
        ] == [(line["logger"], line["event"], line["attempt"]) for line in own]
        for line in about_job:
            assert "req-3am.1" == line["request_id"], line
            assert "tests.charge" == line["task"], line
            assert "default" == line["queue"], line
        failed = next(line for line in about_job if line.get("action") == "job.failed")
        assert "RuntimeError: card declined" == failed["error"]
        assert "error" == failed["level"]

        child_enqueued = next(
            line
            for line in lines
            if line.get("action") == "job.enqueued" and line.get("task") == "tests.audit"
        )
        assert "req-3am.1" == child_enqueued["request_id"]
        assert job.id == child_enqueued["parent_job_id"]
        child = await jobs.get(child_enqueued["job_id"])
        assert child is not None
        assert {"request_id": "req-3am.1", "parent_job_id": job.id} == child.meta
        child_lines = [line for line in lines if line.get("job_id") == child.id]
        assert {"job.enqueued", "job.started", "job.succeeded", None} == {
            line.get("action") for line in child_lines
        }
        for line in child_lines:
            assert ("req-3am.1", job.id) == (line["request_id"], line["parent_job_id"]), line
