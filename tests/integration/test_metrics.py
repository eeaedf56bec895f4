"""Prometheus metrics: counters follow jobs, depth comes from the store, secrets stay out.

``offload worker --metrics-port`` is tested with the other commands, in
tests/acceptance/test_metrics_cli.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from offload import Job, JobContext, JobState, Offload, Retry, Worker
from offload.metrics import install, make_asgi_app
from offload.redaction import Redactor, register_secret

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(jobs: Offload) -> Samples:
    transport = httpx.ASGITransport(app=make_asgi_app(jobs))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        response = await client.get("/")
    assert 200 == response.status_code
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def labels(task: str, queue: str = "default") -> tuple[tuple[str, str], ...]:
    return (("queue", queue), ("task", task))


class TestCounters:
    async def test_counters_move_as_jobs_succeed_retry_and_fail(
        self, jobs: Offload, fresh_redactor: Redactor
    ) -> None:
        """Enqueued, started, succeeded, retried and failed count per task and queue; the
        histograms count every attempt; depth shows the store's counts by state."""
        install(jobs).depth_cache = 0  # every scrape reads the store

        @jobs.task(name="ok")
        async def ok() -> int:
            return 1

        @jobs.task(name="flaky", retries=2, backoff=0)
        async def flaky(ctx: JobContext) -> str:
            if ctx.attempt < 2:
                raise Retry(after=0)
            return "done"

        @jobs.task(name="bad", retries=1, backoff=0)
        async def bad() -> None:
            raise ValueError("no")

        before = await scrape(jobs)
        assert 0 == before.get(("offload_jobs_enqueued_total", labels("ok")), 0)
        done: list[Job[Any]] = [await ok.enqueue(), await ok.enqueue()]
        done += [await flaky.enqueue(), await bad.enqueue()]
        await ok.options(delay=3600).enqueue()
        mid = await scrape(jobs)
        assert 3 == mid[("offload_jobs_enqueued_total", labels("ok"))]
        assert 5 == mid[("offload_queue_depth", (("queue", "default"), ("state", "queued")))]

        worker = Worker(jobs, concurrency=4, install_signals=False)
        runner = asyncio.create_task(worker.run())
        await worker.started.wait()
        for job in done:
            with_retry = job.task != "bad"
            try:
                await job.result(timeout=10)
            except Exception:
                assert not with_retry
        during = await scrape(jobs)
        assert 1 == during[("offload_workers", ())]
        worker.stop()
        await runner

        after = await scrape(jobs)
        assert 2 == after[("offload_jobs_succeeded_total", labels("ok"))]
        assert 2 == after[("offload_jobs_started_total", labels("flaky"))]
        assert 1 == after[("offload_jobs_retried_total", labels("flaky"))]
        assert 1 == after[("offload_jobs_succeeded_total", labels("flaky"))]
        assert 1 == after[("offload_jobs_retried_total", labels("bad"))]
        assert 1 == after[("offload_jobs_failed_total", labels("bad"))]
        assert 2 == after[("offload_job_duration_seconds_count", labels("bad"))]
        assert 2 == after[("offload_job_queue_lag_seconds_count", labels("ok"))]
        assert 0 == after[("offload_workers", ())]
        depth = {
            state: after[("offload_queue_depth", (("queue", "default"), ("state", state.value)))]
            for state in JobState
        }
        assert {"queued": 1, "running": 0, "succeeded": 3, "failed": 1, "cancelled": 0} == {
            s.value: n for s, n in depth.items()
        }

    async def test_registered_secret_never_appears_in_labels(
        self, jobs: Offload, fresh_redactor: Redactor
    ) -> None:
        """A queue named after a registered secret is shown redacted."""
        register_secret("queue-sk-live-4242")
        install(jobs)

        @jobs.task(name="t")
        async def t() -> None:
            return None

        await t.options(queue="queue-sk-live-4242").enqueue()
        text = str(await scrape(jobs))
        assert "sk-live-4242" not in text
        assert "***" in text


class TestFromTheStart:
    async def test_jobs_run_before_the_first_scrape_are_counted(self, db_url: str) -> None:
        """With the observer installed where the app is built, a job enqueued and run by the
        embedded worker before any scrape is counted at the first one, and the embedded
        worker shows while it runs."""
        jobs = Offload(db_url)
        install(jobs)

        @jobs.task(name="early")
        async def early() -> int:
            return 1

        async with jobs.lifespan():
            await (await early.enqueue()).result(timeout=10)
            during = await scrape(jobs)
        after = await scrape(jobs)
        assert 1 == during[("offload_jobs_enqueued_total", labels("early"))]
        assert 1 == during[("offload_jobs_succeeded_total", labels("early"))]
        assert 1 == during[("offload_workers", ())]
        assert 0 == after[("offload_workers", ())]

    async def test_workers_show_whenever_metrics_are_attached(
        self, db_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Metrics first asked for while the embedded worker runs count it, and a worker
        started afterwards as well; a warning names the call that counts jobs from the
        start."""
        jobs = Offload(db_url)
        async with jobs.lifespan():
            install(jobs)  # after the embedded worker started: it saw no start
            embedded = await scrape(jobs)
            other = Worker(jobs, concurrency=1, install_signals=False)
            runner = asyncio.create_task(other.run())
            await other.started.wait()
            both = await scrape(jobs)
            other.stop()
            await runner
            again = await scrape(jobs)
        assert (1, 2, 1) == tuple(
            samples[("offload_workers", ())] for samples in (embedded, both, again)
        )
        (warning,) = [
            r for r in caplog.records if r.__dict__.get("action") == "metrics.late_install"
        ]
        assert "offload.metrics.install(jobs)" in warning.getMessage()
