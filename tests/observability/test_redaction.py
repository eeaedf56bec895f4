"""Secrets planted by key name, by registered value and as a Secret-marked argument never
reach logs, API answers or CLI output."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI

from offload import JobState, Offload, Worker
from offload.fastapi import RequestLogMiddleware, jobs_router
from offload.redaction import REDACTED, Redactor, Secret, redact_call, register_secret
from tests.observability import secretapp
from tests.observability.conftest import LogLines
from tests.observability.secretapp import KEYED, MARKED, REGISTERED

ROOT = Path(__file__).resolve().parents[2]

PLANTED = (KEYED, REGISTERED, MARKED)


class TestRedactor:
    def test_secret_key_names(self) -> None:
        """Key names match by substring, case- and dash-insensitively."""
        r = Redactor()
        for key in [
            "password",
            "DB_PASSWORD",
            "api-key",
            "X-Api-Key",
            "apiKey",
            "Set-Cookie",
            "client_secret",
            "Authorization",
            "refresh_token",
            "private_key",
            "passwd",
        ]:
            assert r.is_secret_key(key), key
        for key in ["task", "attempt", "queue", "job_id", "request_id", "route", "status"]:
            assert not r.is_secret_key(key), key

    def test_nested_values_and_extra_keys(self) -> None:
        r = Redactor()
        r.add_keys("ssn")
        data = {"user": {"name": "ada", "ssn": "1", "tokens": ["a"]}, "list": [{"pwd": "x"}]}
        assert {
            "user": {"name": "ada", "ssn": REDACTED, "tokens": REDACTED},
            "list": [{"pwd": REDACTED}],
        } == r.value(data)

    def test_registered_values_and_url_passwords(self) -> None:
        r = Redactor()
        r.register("abcd-secret", "abcd")
        assert "x *** y *** z" == r.text("x abcd-secret y abcd z")
        assert "redis://:***@host:6379/0 and postgresql://u:***@db/x" == r.text(
            "redis://:pw@host:6379/0 and postgresql://u:p@ss@db/x".replace("p@ss", "pass")
        )

    def test_short_or_non_text_secrets_are_refused(self) -> None:
        r = Redactor()
        with pytest.raises(ValueError, match="at least 4 characters"):
            r.register("abc")
        with pytest.raises(TypeError, match="must be a str"):
            r.register(1234)  # type: ignore[arg-type]

    def test_secret_call_arguments(self) -> None:
        """Marked parameters are hidden by name (keyword) or index (positional-only)."""
        assert (["***", 2], {"card": "***", "name": "ada"}) == redact_call(
            ["1", 2], {"card": "c", "name": "ada"}, {"secret_args": [0, "card"]}
        )
        assert ([], {"password": "***"}) == redact_call([], {"password": "p"}, {})

    def test_secret_on_star_args_is_refused(self, jobs: Offload) -> None:
        with pytest.raises(TypeError, match="Secret cannot mark"):

            @jobs.task
            def bad(*cards: Annotated[str, Secret]) -> None:
                return None


def build(jobs: Offload) -> FastAPI:
    secretapp.register(jobs)
    app = FastAPI()
    app.add_middleware(RequestLogMiddleware)
    app.include_router(jobs_router(jobs, allow_anonymous=True, prefix="/jobs"))
    return app


def cli(db_url: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", "jobs", *args, "--url", db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


class TestPlantedSecrets:
    async def test_never_in_logs_api_or_cli(
        self, jobs: Offload, db_url: str, json_logs: LogLines, fresh_redactor: Redactor
    ) -> None:
        register_secret(REGISTERED)
        app = build(jobs)
        failed = await jobs.tasks["tests.pay"].enqueue("ada", MARKED, api_token=KEYED)
        succeeded = await jobs.tasks["tests.lookup"].enqueue("ada")
        worker = Worker(jobs, concurrency=2, install_signals=False)
        runner = asyncio.create_task(worker.run())
        await succeeded.result(timeout=10)
        for _ in range(500):
            if (await failed.refresh()).state is JobState.FAILED:
                break
            await asyncio.sleep(0.02)
        worker.stop()
        await runner
        assert JobState.FAILED == failed.state

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            answers = [
                (await client.get(f"/jobs/{failed.id}")).text,
                (await client.get(f"/jobs/{succeeded.id}")).text,
                (await client.get("/jobs")).text,
            ]
        api = json.loads(answers[1])
        assert {"user": "ada", "password": REDACTED, "note": "key ***"} == api["result"]
        error = json.loads(answers[0])["error"]
        assert "card *** declined by gateway key ***" == error["message"]

        app_option = ("--app", "tests.observability.secretapp:jobs")
        outputs = await asyncio.gather(
            *(
                asyncio.to_thread(cli, db_url, *args)
                for args in (
                    ["show", failed.id, "--json"],
                    ["show", failed.id],
                    ["show", succeeded.id, "--json", *app_option],
                    ["show", succeeded.id, *app_option],
                    ["list"],
                )
            )
        )
        shown = json.loads(outputs[0])
        assert {"user": "ada", "card": REDACTED, "api_token": REDACTED} == shown["kwargs"]

        logs = json_logs()
        task_lines = [
            line for line in logs if line["logger"].startswith(("tests.pay", "offload.task"))
        ]
        assert ["paying with *** using ***", "card *** token ***"] == [
            line["event"] for line in task_lines
        ]
        everything = "\n".join([*answers, *outputs, json.dumps(logs)])
        for secret in PLANTED:
            assert secret not in everything, secret
