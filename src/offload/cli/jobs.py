"""``offload jobs``: read and change stored jobs, talking to the store directly.

No app module is needed: operators run these against a production store from a shell that
may not have the application's code, so everything works from ``--url`` alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import typer

from offload import admin
from offload.cli._common import (
    USAGE,
    CliError,
    ConnectedStore,
    app_option,
    connected,
    help_without_command,
    iso,
    json_option,
    parse_duration,
    print_json,
    url_option,
    wide_console,
)
from offload.errors import InvalidCursor, JobNotFound
from offload.records import JobError, JobRecord, JobState
from offload.stores import JobFilter, Store

app = typer.Typer(
    name="jobs",
    help="List, inspect, retry, cancel, delete and purge jobs.",
)


@app.callback(invoke_without_command=True)
def _group(ctx: typer.Context) -> None:
    help_without_command(ctx)


STATES = ", ".join(s.value for s in JobState)
# A screenful: enough to spot a pattern, small enough to read; --limit raises it.
DEFAULT_LIMIT = 20


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Accept both repeated options and comma-separated lists, as shells users write both."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return tuple(out)


def _states(values: list[str] | None) -> tuple[JobState, ...]:
    states = []
    for name in _split(values):
        try:
            states.append(JobState(name.lower()))
        except ValueError:
            raise CliError(f"unknown state {name!r}; choose from {STATES}", USAGE) from None
    return tuple(states)


def _error(error: JobError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def _summary(record: JobRecord) -> dict[str, Any]:
    error = admin.shown_error(record.error)
    return {
        "id": record.id,
        "task": record.task,
        "queue": record.queue,
        "state": record.state.value,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
        "enqueued_at": iso(record.enqueued_at),
        "run_at": iso(record.run_at),
        "finished_at": iso(record.finished_at),
        "error": None if error is None else {"type": error.type, "message": error.message},
    }


def _detail(record: JobRecord, conn: ConnectedStore) -> dict[str, Any]:
    shown = admin.view(record, conn.result_decoder(record))
    progress = shown.progress
    return {
        "id": record.id,
        "task": record.task,
        "queue": record.queue,
        "state": record.state.value,
        "priority": record.priority,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
        "args": shown.args,
        "kwargs": shown.kwargs,
        "enqueued_at": iso(record.enqueued_at),
        "run_at": iso(record.run_at),
        "started_at": iso(record.started_at),
        "finished_at": iso(record.finished_at),
        "lease_until": iso(record.lease_until),
        "timeout": record.timeout,
        "worker_id": record.worker_id,
        "key": record.key,
        "cancel_requested": record.cancel_requested,
        "result": shown.result,
        "error": _error(shown.error),
        "progress": None
        if progress is None
        else {"fraction": progress.fraction, "message": progress.message},
        "meta": shown.meta,
    }


def _short_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _missing(job_id: str) -> CliError:
    return CliError(
        f"no job with id {job_id!r} (purged, or another store?); find ids with `offload jobs list`"
    )


@app.command("list")
def list_jobs(
    state: list[str] | None = typer.Option(
        None, "--state", "-s", help=f"Only these states ({STATES}); repeat or comma-separate."
    ),
    task: list[str] | None = typer.Option(None, "--task", "-t", help="Only these task names."),
    queue: list[str] | None = typer.Option(None, "--queue", "-q", help="Only these queues."),
    limit: int = typer.Option(DEFAULT_LIMIT, "--limit", "-n", min=1, help="Jobs per page."),
    cursor: str | None = typer.Option(None, "--cursor", help="Page cursor from a previous run."),
    as_json: bool = json_option,
    url: str | None = url_option,
    app_target: str | None = app_option,
) -> None:
    """List jobs, newest first."""
    from rich.table import Column, Table
    from rich.text import Text

    flt = JobFilter(states=_states(state), tasks=_split(task), queues=_split(queue))

    async def fetch() -> tuple[list[JobRecord], str | None]:
        async with connected(url, app_target) as conn:
            try:
                page = await admin.list_jobs(conn.store, flt, limit, cursor)
            except InvalidCursor as exc:
                raise CliError(f"{exc}; pass the cursor a previous page printed", USAGE) from None
            return page.jobs, page.next_cursor

    records, next_cursor = asyncio.run(fetch())
    if as_json:
        print_json({"jobs": [_summary(r) for r in records], "next_cursor": next_cursor})
        return
    table = Table(
        # Ids are what the other commands take: never shorten or wrap them.
        Column("id", no_wrap=True, min_width=max((len(r.id) for r in records), default=2)),
        Column("task"),
        Column("queue"),
        Column("state", no_wrap=True),
        Column("attempt", no_wrap=True),
        Column("enqueued"),
        Column("error", max_width=60),
    )
    for r in records:
        shown = admin.shown_error(r.error)
        error = "" if shown is None else f"{shown.type}: {shown.message}"
        table.add_row(
            Text(r.id),
            Text(r.task),
            Text(r.queue),
            Text(r.state.value),
            f"{r.attempt}/{r.max_attempts}",
            _short_time(r.enqueued_at),
            Text(" ".join(error.split())),
        )
    wide_console().print(table)
    if next_cursor is not None:
        typer.echo(f"next page: --cursor {next_cursor}")


@app.command("show")
def show(
    job_id: str = typer.Argument(..., metavar="JOB_ID"),
    as_json: bool = json_option,
    url: str | None = url_option,
    app_target: str | None = app_option,
) -> None:
    """Show every field of one job, including its error traceback and result."""
    from rich.table import Table
    from rich.text import Text

    async def fetch() -> dict[str, Any]:
        async with connected(url, app_target) as conn:
            try:
                record = await admin.get_job(conn.store, job_id)
            except JobNotFound:
                raise _missing(job_id) from None
            return _detail(record, conn)

    data = asyncio.run(fetch())
    if as_json:
        print_json(data)
        return
    console = wide_console()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    error = data["error"]
    for key, value in data.items():
        if key == "error":
            value = None if error is None else f"{error['type']}: {error['message']}"
        elif isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        table.add_row(key, Text("" if value is None else str(value)))
    console.print(table)
    if error is not None and error.get("traceback"):
        # Plain text: a traceback must keep its lines intact to be readable and searchable.
        typer.echo("\ntraceback:\n" + error["traceback"].rstrip())


@app.command("retry")
def retry(
    job_id: str = typer.Argument(..., metavar="JOB_ID"),
    url: str | None = url_option,
) -> None:
    """Queue a failed or cancelled job again, with a fresh attempt budget."""
    record = _change(admin.retry_job, job_id, url)
    typer.echo(f"job {record.id} is {record.state.value} again")


@app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., metavar="JOB_ID"),
    url: str | None = url_option,
) -> None:
    """Cancel a queued job now, or ask the worker running it to stop it."""
    try:
        record = _change(admin.cancel_job, job_id, url)
    except admin.NotCancellable as exc:
        # On the command line cancel is idempotent: a job cancelled before is what was asked.
        record = exc.record
        if record.state is not JobState.CANCELLED:
            raise CliError(
                f"job {record.id} already {record.state.value}; only queued or running jobs "
                "can be cancelled"
            ) from None
    if record.state is JobState.CANCELLED:
        typer.echo(f"job {record.id} cancelled")
    else:
        typer.echo(f"job {record.id} is running; its worker was asked to stop it")


@app.command("delete")
def delete(
    job_id: str = typer.Argument(..., metavar="JOB_ID"),
    url: str | None = url_option,
) -> None:
    """Delete a finished or queued job (a queued one is cancelled first); not a running one."""
    record = _change(admin.delete_job, job_id, url)
    typer.echo(f"job {record.id} ({record.state.value}) deleted")


def _change(
    action: Callable[[Store, str], Awaitable[JobRecord]], job_id: str, url: str | None
) -> JobRecord:
    """Run one operator action of ``offload.admin`` on ``job_id``; an unknown id is the
    command line's own message (with where to find ids), other refusals pass through."""

    async def act() -> JobRecord:
        async with connected(url, None) as conn:
            try:
                return await action(conn.store, job_id)
            except JobNotFound:
                raise _missing(job_id) from None

    return asyncio.run(act())


@app.command("purge")
def purge(
    older_than: str = typer.Option(
        ...,
        "--older-than",
        metavar="DURATION",
        help="Delete finished jobs that ended before this long ago: 30s, 15m, 12h, 7d, 2w.",
    ),
    as_json: bool = json_option,
    url: str | None = url_option,
) -> None:
    """Delete finished (succeeded, failed, cancelled) jobs; queued and running ones stay."""
    seconds = parse_duration(older_than)

    async def act() -> int:
        async with connected(url, None) as conn:
            return await admin.purge_jobs(conn.store, seconds)

    count = asyncio.run(act())
    if as_json:
        print_json({"purged": count})
    else:
        typer.echo(f"purged {count} finished job(s) older than {older_than}")
