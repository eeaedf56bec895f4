"""A task run by a worker that logs a secret, in its message or in a traceback, writes the
mask in its JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging

from offload import JobContext, JobState, Offload, Worker
from tests.conftest import LogLines


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
