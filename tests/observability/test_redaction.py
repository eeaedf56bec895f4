"""Secrets planted by key name, by registered value and as a Secret-marked argument never
reach logs, API answers or CLI output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import httpx
import pytest
import structlog
from fastapi import FastAPI

from offload import JobContext, JobState, Offload, Worker
from offload.fastapi import RequestLogMiddleware, jobs_router
from offload.logging import RedactingFilter, configure_logging
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


class TestSecretsWrittenInMessages:
    @pytest.mark.parametrize(
        ("written", "shown"),
        [
            ("login password=hunter2", "login password=***"),
            ("login password=hunter2 from 10.0.0.1", "login password=*** from 10.0.0.1"),
            ("token: abc123, user ada", "token: ***, user ada"),
            ('{"api_key": "abc def", "user": "ada"}', '{"api_key": "***", "user": "ada"}'),
            ("{'password': 'x y', 'n': 1}", "{'password': '***', 'n': 1}"),
            ('DB_PASSWORD="s3c\\"ret" set', 'DB_PASSWORD="***" set'),
            ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
            ("X-Api-Key: k123", "X-Api-Key: ***"),
            ("GET /cb?token=abc&user=ada", "GET /cb?token=***&user=ada"),
            ("client_secret=xyz;next", "client_secret=***;next"),
            ("password=b'abc'", "password=b'***'"),
        ],
    )
    def test_the_value_after_a_secret_key_name_is_hidden(self, written: str, shown: str) -> None:
        """``key=value``, ``key: value`` and quoted pairs are masked for the secret key names,
        keeping the name and the quotes so the line still says what was hidden."""
        assert shown == Redactor().message(written)

    @pytest.mark.parametrize(
        "written",
        [
            "job succeeded",
            "refreshing tokens for ada",
            "queue: default, attempt=2",
            "if token == expected:",
        ],
    )
    def test_text_without_a_secret_pair_is_unchanged(self, written: str) -> None:
        assert written == Redactor().message(written)

    def test_added_key_names_count_in_messages_too(self) -> None:
        r = Redactor()
        r.add_keys("ssn")
        assert "user ada ssn=*** ok" == r.message("user ada ssn=078-05-1120 ok")


class TestSecretsInLogOutput:
    async def test_a_task_logging_a_password_shows_the_mask(
        self, jobs: Offload, json_logs: LogLines
    ) -> None:
        """``ctx.logger.info("login password=%s", ...)`` in a task run by a worker writes the
        mask in the JSON line, and so does a traceback quoting a token."""

        @jobs.task(name="tests.login", retries=0)
        async def login(ctx: JobContext, user: str) -> None:
            ctx.logger.info("login password=%s", "hunter2")
            logging.getLogger("tests.login").info('sent {"api_key": "%s"}', "k-9876")
            try:
                raise ValueError("refused token: tok-5555")
            except ValueError:
                logging.getLogger("tests.login").exception("login failed for %s", user)

        job = await login.enqueue("ada")
        async with asyncio.timeout(20):
            await Worker(jobs, install_signals=False).run_until_idle()
        assert JobState.SUCCEEDED == (await job.refresh()).state
        lines = [line for line in json_logs() if line.get("job_id") == job.id]
        events = [line["event"] for line in lines if line["logger"].endswith("tests.login")]
        assert [
            "login password=***",
            'sent {"api_key": "***"}',
            "login failed for ada",
        ] == events
        (failed,) = [line for line in lines if "exception" in line]
        assert "ValueError: refused token: ***" in failed["exception"]
        for secret in ("hunter2", "k-9876", "tok-5555"):
            assert secret not in json.dumps(lines), secret

    def test_console_rendering_shows_the_mask(self) -> None:
        """The human-readable rendering goes through the same redaction as JSON."""
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        buffer = io.StringIO()
        try:
            configure_logging(json=False, stream=buffer, background=False)
            logging.getLogger("tests.console").warning("retrying with password=%s", "hunter2")
            structlog.get_logger("tests.console").warning("native secret=s-4321 here")
        finally:
            for handler in root.handlers[:]:
                root.removeHandler(handler)
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])
            structlog.reset_defaults()
        out = buffer.getvalue()
        assert "retrying with password=***" in out
        assert "native secret=*** here" in out
        assert "hunter2" not in out
        assert "s-4321" not in out

    def test_redacting_filter_on_a_plain_handler(self) -> None:
        """An application's own stdlib handler with ``RedactingFilter`` prints the mask, in
        the message and in the traceback its formatter renders."""
        buffer = io.StringIO()
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.addFilter(RedactingFilter())
        logger = logging.getLogger("tests.plain")
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
        try:
            logger.info("login password=%s", "hunter2")
            try:
                raise RuntimeError("bad api-key=ak-2468")
            except RuntimeError:
                logger.exception("call failed")
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
        out = buffer.getvalue()
        assert out.startswith("INFO login password=***\nERROR call failed\nTraceback")
        assert "RuntimeError: bad api-key=***" in out
        assert "hunter2" not in out
        assert "ak-2468" not in out
