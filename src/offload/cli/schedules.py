"""``offload schedules``: list, pause and resume the schedules an app declares.

Schedules are declared in code, so these commands take the app (``MODULE:ATTR``, as ``offload
worker`` does); the pause flag lives in the store, so every instance obeys it at its next slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from offload.admin import ScheduleStatus, set_paused, statuses
from offload.app import Offload
from offload.cli._common import (
    help_without_command,
    iso,
    json_option,
    load_app,
    print_json,
    wide_console,
)
from offload.stores import open_store

app = typer.Typer(name="schedules", help="List, pause and resume the app's schedules.")

target_argument = typer.Argument(
    ..., metavar="MODULE:ATTR", help="The Offload instance that declares the schedules."
)
name_argument = typer.Argument(..., metavar="NAME", help="Schedule name (see `list`).")
url_option = typer.Option(
    None,
    "--url",
    help="Store URL overriding the app's own (which defaults to $OFFLOAD_URL, then to "
    "sqlite:///offload.db).",
    show_default=False,
)


@app.callback(invoke_without_command=True)
def _group(ctx: typer.Context) -> None:
    help_without_command(ctx)


def _app(target: str, url: str | None) -> Offload:
    jobs = load_app(target)
    if url:
        # Importing the app does not connect, so its store can still be swapped (as in
        # `offload worker --url`).
        jobs.store = open_store(url)
        jobs.url = url
    return jobs


def _json(status: ScheduleStatus) -> dict[str, Any]:
    s = status.schedule
    return {
        "name": s.name,
        "task": s.task.name,
        "cron": s.cron,
        "timezone": s.timezone_name if s.cron is not None else None,
        "every": s.every,
        "catch_up": s.catch_up,
        "paused": status.paused,
        "fired_until": iso(status.fired_until),
        "next": [iso(t) for t in status.next_times],
    }


@app.command("list")
def list_schedules(
    target: str = target_argument,
    as_json: bool = json_option,
    url: str | None = url_option,
) -> None:
    """Show each schedule, whether it is paused, and its next fire times (UTC)."""
    from rich.table import Table
    from rich.text import Text

    jobs = _app(target, url)

    async def fetch() -> list[ScheduleStatus]:
        try:
            return await statuses(jobs)
        finally:
            await jobs.close()

    rows = [_json(s) for s in asyncio.run(fetch())]
    if as_json:
        print_json({"schedules": rows})
        return
    table = Table("name", "task", "when", "catch-up", "state", "next (UTC)")
    for row in rows:
        when = f"{row['cron']} ({row['timezone']})" if row["cron"] else f"every {row['every']} s"
        table.add_row(
            Text(row["name"]),
            Text(row["task"]),
            Text(when),
            row["catch_up"],
            "paused" if row["paused"] else "active",
            "\n".join(t[:19].replace("T", " ") for t in row["next"]),
        )
    wide_console().print(table)


def _set(target: str, name: str, url: str | None, paused: bool) -> None:
    jobs = _app(target, url)

    async def act() -> ScheduleStatus:
        try:
            return await set_paused(jobs, name, paused)
        finally:
            await jobs.close()

    status = asyncio.run(act())
    if paused:
        typer.echo(f"schedule {name} paused; `offload schedules resume` starts it again")
    else:
        nxt = iso(status.next_times[0]) if status.next_times else "never"
        typer.echo(f"schedule {name} resumed; next slot {nxt}")


@app.command("pause")
def pause(
    target: str = target_argument, name: str = name_argument, url: str | None = url_option
) -> None:
    """Stop firing a schedule on every instance; slots passed while paused never run."""
    _set(target, name, url, True)


@app.command("resume")
def resume(
    target: str = target_argument, name: str = name_argument, url: str | None = url_option
) -> None:
    """Fire a paused schedule again from its next slot on."""
    _set(target, name, url, False)
