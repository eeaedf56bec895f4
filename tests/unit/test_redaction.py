"""The redactor: secret key names, registered values, Secret-marked arguments and secrets
written inside messages, masked in values, in text and in the log output.

A task's own log lines are checked in tests/integration/test_task_log_redaction.py, and
secrets planted in jobs checked against logs, API answers and CLI output in
tests/acceptance/test_redaction_cli.py."""

from __future__ import annotations

import io
import logging
from typing import Annotated

import pytest
import structlog

from offload import Offload
from offload.logging import RedactingFilter, configure_logging
from offload.redaction import REDACTED, Redactor, Secret, redact_call
from tests.conftest import LogLines


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


def test_the_postgresql_pool_repeats_no_outage_at_warning(json_logs: LogLines) -> None:
    """During an outage psycopg's pool warns on every reconnect it tries; the store says it
    once, so the pool's warnings stay out of the logs and its errors stay in."""
    pool = logging.getLogger("psycopg.pool")
    pool.warning("error connecting in 'offload': connection refused")
    pool.error("the pool could not be opened")
    assert ["the pool could not be opened"] == [
        line["event"] for line in json_logs() if line.get("logger") == "psycopg.pool"
    ]
