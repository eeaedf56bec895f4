"""Secrets planted by key name, by registered value and as a Secret-marked argument never
reach logs, API answers or CLI output (``offload jobs show`` and ``list``, run as commands)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
from fastapi import FastAPI

from offload import JobState, Offload, Worker
from offload.fastapi import RequestLogMiddleware, jobs_router
from offload.redaction import REDACTED, Redactor, register_secret
from tests.acceptance import secretapp
from tests.acceptance.secretapp import KEYED, MARKED, REGISTERED
from tests.conftest import LogLines

ROOT = Path(__file__).resolve().parents[2]

PLANTED = (KEYED, REGISTERED, MARKED)


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

        app_option = ("--app", "tests.acceptance.secretapp:jobs")
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
