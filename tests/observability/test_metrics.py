"""Prometheus metrics: counters follow jobs, depth comes from the store, secrets stay out."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from offload import Job, JobContext, JobState, Offload, Retry, Worker
from offload.metrics import install, make_asgi_app
from offload.redaction import Redactor, register_secret
from tests.acceptance.test_cli import (
    APP,
    WorkerProcess,
    cli,
    cli_env,
    json_logs,
    wait_until,
    with_app,
)

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


class TestWorkerCommand:
    def test_metrics_port_serves_on_loopback(self, db_url: str, tmp_path: Path) -> None:
        """``offload worker --metrics-port`` serves the metrics on 127.0.0.1 and counts the
        jobs it runs."""
        log = str(tmp_path / "runs.txt")

        async def enqueue(s: Any) -> str:
            job = await s.nap.enqueue(log, 0.0)
            return str(job.id)

        job_id = with_app(db_url, enqueue)
        worker = WorkerProcess(
            db_url, tmp_path / "worker.log", "--metrics-port", "0", "--log-level", "DEBUG"
        )
        try:
            wait_until(lambda: worker.logged("worker.metrics") and worker.logged("job.succeeded"))
            (line,) = [
                e for e in json_logs(worker.stderr_path) if e.get("action") == "worker.metrics"
            ]
            assert "127.0.0.1" == line["host"]
            response = httpx.get(f"http://127.0.0.1:{line['port']}/metrics", timeout=10)
            samples = parse(response.text)
            assert 1 == samples[("offload_jobs_succeeded_total", labels("nap"))]
            assert 1 == samples[("offload_workers", ())]
            assert (
                1
                == samples[("offload_queue_depth", (("queue", "default"), ("state", "succeeded")))]
            )
            assert job_id
            worker.signal(signal.SIGTERM)
            assert 0 == worker.wait()
        finally:
            worker.ensure_dead()

    def test_help_names_the_extra_to_install(self) -> None:
        """``--help`` says which extra ``--metrics-port`` needs, brackets included (Rich
        markup would swallow a bare ``[prometheus]``)."""
        result = cli("worker", "--help", env=cli_env(COLUMNS="250"))
        assert 0 == result.returncode
        (line,) = [line for line in result.stdout.splitlines() if "--metrics-port " in line]
        assert "needs the prometheus extra (pip install 'offload[prometheus]')" in line

    def test_port_in_use_is_a_usage_error(self, db_url: str) -> None:
        """A taken port ends the command with one line naming the option, exit status 2."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = cli("worker", APP, "--url", db_url, "--metrics-port", str(port), "--json-logs")
        assert 2 == result.returncode
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: cannot serve metrics on 127.0.0.1:{port}")
        assert "--metrics-port" in last
