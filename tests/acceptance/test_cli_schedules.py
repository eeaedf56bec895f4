"""``offload schedules list|pause|resume``, run as real processes against a SQLite file."""

from __future__ import annotations

import json
from datetime import datetime

from tests.acceptance.test_cli import assert_one_line_error, cli

APP = "tests.acceptance.schedapp:jobs"


class TestSchedulesCli:
    def test_list_pause_resume(self, db_url: str) -> None:
        """The listing shows each schedule and its next fire times; a pause made from the
        shell is stored (and listed) until resumed."""
        listed = cli("schedules", "list", APP, "--json", "--url", db_url)
        assert 0 == listed.returncode, listed.stderr
        rows = {r["name"]: r for r in json.loads(listed.stdout)["schedules"]}
        assert {"nightly", "poll"} == set(rows)
        nightly = rows["nightly"]
        assert ("cleanup", "0 3 * * *", "Europe/Berlin", False) == (
            nightly["task"],
            nightly["cron"],
            nightly["timezone"],
            nightly["paused"],
        )
        assert 300 == rows["poll"]["every"]
        times = [datetime.fromisoformat(t) for t in rows["poll"]["next"]]
        assert 3 == len(times)
        assert all(0 == t.minute % 5 and 0 == t.second for t in times)

        paused = cli("schedules", "pause", APP, "nightly", "--url", db_url)
        assert 0 == paused.returncode, paused.stderr
        assert "schedule nightly paused" in paused.stdout
        table = cli("schedules", "list", APP, "--url", db_url)
        assert 0 == table.returncode, table.stderr
        assert "paused" in next(line for line in table.stdout.splitlines() if "nightly" in line)

        resumed = cli("schedules", "resume", APP, "nightly", "--url", db_url)
        assert 0 == resumed.returncode, resumed.stderr
        assert "next slot" in resumed.stdout
        again = json.loads(cli("schedules", "list", APP, "--json", "--url", db_url).stdout)
        assert not any(r["paused"] for r in again["schedules"])

    def test_unknown_name_is_a_one_line_error(self, db_url: str) -> None:
        """A mistyped name fails in one line that lists the known schedules."""
        result = cli("schedules", "pause", APP, "nigthly", "--url", db_url)
        assert_one_line_error(result, 1, "'nigthly'", "nightly, poll")

    def test_app_argument_is_required(self) -> None:
        """Without the app there is nothing to list: a usage error, in one line."""
        result = cli("schedules", "list")
        assert_one_line_error(result, 2, "MODULE:ATTR")
