"""``Background``: jobs enqueued from an endpoint are stored before the response goes out."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, assert_type

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from offload import Job, JobState, Offload
from offload.fastapi import Background, DurableTasks
from offload.stores.base import JobFilter
from offload.testing import eager


def build(jobs: Offload) -> FastAPI:
    """An app with one task and endpoints that enqueue it in the ways users do."""

    @jobs.task(name="tests.add")
    async def add(x: int, y: int) -> int:
        return x + y

    def not_a_task(x: int) -> int:
        return x

    app = FastAPI(lifespan=jobs.lifespan)

    @app.post("/add")
    async def enqueue_add(x: int, y: int, background: Background) -> dict[str, str]:
        job = await background.add_task(add, x, y)
        assert_type(job, Job[int])
        return {"id": job.id}

    @app.post("/twice")
    async def enqueue_twice(background: Background) -> dict[str, list[str]]:
        await background.add_task(add, 1, 2)
        await background.add_task(add.options(priority=5), x=3, y=4)
        return {"ids": [job.id for job in background.jobs]}

    @app.post("/keyed")
    async def enqueue_keyed(key: str, background: Background) -> dict[str, str]:
        job = await background.add_task(add.options(key=key), 1, 1)
        return {"id": job.id}

    @app.post("/plain")
    async def enqueue_plain(background: Background) -> dict[str, str]:
        await background.add_task(not_a_task, 1)  # type: ignore[arg-type]
        return {}

    @app.post("/bad-args")
    async def enqueue_bad_args(background: Background) -> dict[str, str]:
        await background.add_task(add, 1, "two")  # type: ignore[arg-type]
        return {}

    return app


@contextlib.asynccontextmanager
async def serve(app: FastAPI, *, asgi: Any = None) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan, as a server would, and talk to it over ASGI."""
    transport = httpx.ASGITransport(asgi if asgi is not None else app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


async def stored_ids(url: str) -> list[str]:
    """Job ids as a separate connection to the file sees them: only committed rows count."""
    async with Offload(url, embedded_worker=False) as reader:
        page = await reader.store.list(JobFilter(), 100)
    return [record.id for record in page.jobs]


class TestAddTask:
    async def test_job_is_committed_before_the_response_starts(self, db_url: str) -> None:
        """When the first byte of the response is sent, the job is already in the file."""
        jobs = Offload(db_url, embedded_worker=False)
        app = build(jobs)
        seen_at_response_start: list[list[str]] = []

        async def spy(scope: Scope, receive: Receive, send: Send) -> None:
            async def checked_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen_at_response_start.append(await stored_ids(db_url))
                await send(message)

            await app(scope, receive, checked_send)

        async with serve(app, asgi=spy) as client:
            response = await client.post("/add", params={"x": 1, "y": 2})

        assert 200 == response.status_code
        assert [[response.json()["id"]]] == seen_at_response_start

    async def test_job_runs_on_the_embedded_worker(self, db_url: str) -> None:
        """With the lifespan's embedded worker, the enqueued job runs and succeeds."""
        jobs = Offload(db_url)
        async with serve(build(jobs)) as client:
            response = await client.post("/add", params={"x": 2, "y": 3})
            job = await jobs.get(response.json()["id"])
            assert job is not None
            assert 5 == await job.result(timeout=10)
            await job.refresh()
            assert JobState.SUCCEEDED == job.state

    async def test_eager_runs_the_job_before_the_response(self, db_url: str) -> None:
        """Under ``offload.testing.eager`` the job has succeeded when the response arrives."""
        jobs = Offload(db_url, embedded_worker=False)
        async with serve(build(jobs)) as client:
            with eager(jobs):
                response = await client.post("/add", params={"x": 20, "y": 22})
            job = await jobs.get(response.json()["id"])
            assert job is not None
            assert (JobState.SUCCEEDED, 42) == (job.state, await job.result())

    async def test_several_jobs_per_request(self, db_url: str) -> None:
        """Every ``add_task`` call stores its own job; ``background.jobs`` lists them in order."""
        jobs = Offload(db_url, embedded_worker=False)
        async with serve(build(jobs)) as client:
            response = await client.post("/twice")
        ids = response.json()["ids"]
        assert 2 == len(ids)
        assert sorted(ids) == sorted(await stored_ids(db_url))

    async def test_options_such_as_an_idempotency_key_apply(self, db_url: str) -> None:
        """A ``task.options(key=...)`` call is accepted; a repeated key returns the same job."""
        jobs = Offload(db_url, embedded_worker=False)
        async with serve(build(jobs)) as client:
            first = await client.post("/keyed", params={"key": "k1"})
            second = await client.post("/keyed", params={"key": "k1"})
        assert first.json()["id"] == second.json()["id"]
        assert [first.json()["id"]] == await stored_ids(db_url)

    async def test_plain_function_is_refused_with_the_fix(self, db_url: str) -> None:
        """A function that is not a registered task raises TypeError naming ``@jobs.task``."""
        jobs = Offload(db_url, embedded_worker=False)
        async with serve(build(jobs)) as client:
            with pytest.raises(TypeError, match=r"decorate the function with @jobs\.task"):
                await client.post("/plain")
        assert [] == await stored_ids(db_url)

    async def test_arguments_not_matching_the_task_raise_type_error(self, db_url: str) -> None:
        """Bad arguments are a bug in the endpoint: TypeError, and nothing is stored."""
        jobs = Offload(db_url, embedded_worker=False)
        async with serve(build(jobs)) as client:
            with pytest.raises(TypeError, match="'y'"):
                await client.post("/bad-args")
        assert [] == await stored_ids(db_url)

    async def test_store_outage_answers_503_and_stores_nothing(self, db_url: str) -> None:
        """When the store cannot take the job the client gets 503 with Retry-After, not 2xx."""
        jobs = Offload(db_url, embedded_worker=False)
        async with serve(build(jobs)) as client:
            await jobs.store.close()  # the store goes away under a running app
            response = await client.post("/add", params={"x": 1, "y": 2})
        assert 503 == response.status_code
        assert "5" == response.headers["retry-after"]
        assert "job store is unavailable" in response.json()["detail"]
        assert [] == await stored_ids(db_url)

    async def test_add_task_outside_an_endpoint(self, jobs: Offload) -> None:
        """``DurableTasks`` works on its own too, e.g. in a service layer given one."""

        @jobs.task(name="tests.echo")
        def echo(text: str) -> str:
            return text

        job = await DurableTasks().add_task(echo, "hi")
        assert_type(job, Job[str])
        assert JobState.QUEUED == job.state


class TestLifespan:
    async def test_without_embedded_worker_jobs_wait(self, db_url: str) -> None:
        """``embedded_worker=False`` leaves jobs queued for separate worker processes."""
        jobs = Offload(db_url, embedded_worker=False)
        async with serve(build(jobs)) as client:
            response = await client.post("/add", params={"x": 1, "y": 1})
            job = await jobs.get(response.json()["id"])
        assert job is not None
        assert JobState.QUEUED == job.state

    async def test_jobs_left_queued_run_at_the_next_start(self, db_url: str) -> None:
        """A job accepted while no worker ran is picked up when the app starts with one."""
        app = build(Offload(db_url, embedded_worker=False))
        async with serve(app) as client:
            job_id = (await client.post("/add", params={"x": 4, "y": 4})).json()["id"]

        jobs = Offload(db_url)
        build(jobs)
        async with jobs.lifespan():
            job = await jobs.get(job_id)
            assert job is not None
            assert 8 == await job.result(timeout=10)


DOCS = Path(__file__).parents[2] / "docs" / "fastapi.md"


class TestDocs:
    async def test_samples_run_in_order(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every Python sample in docs/fastapi.md runs, and the test it defines passes."""
        monkeypatch.chdir(tmp_path)  # the samples use a relative sqlite:///offload.db
        monkeypatch.setenv("API_KEY", "docs-key")
        samples = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
        namespace: dict[str, Any] = {"__name__": "docs_fastapi"}
        for sample in samples:
            exec(compile(sample, str(DOCS), "exec"), namespace)
        tests = [v for k, v in namespace.items() if k.startswith("test_")]
        assert 1 <= len(tests)
        for test in tests:
            assert inspect.iscoroutinefunction(test)
            await test()

        app: FastAPI = namespace["app"]
        jobs: Offload = namespace["jobs"]
        transport = httpx.ASGITransport(app)
        async with jobs, httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            refused = await client.get("/jobs")
            allowed = await client.get("/jobs", headers={"X-API-Key": "docs-key"})
        assert (401, 200) == (refused.status_code, allowed.status_code)
