"""``offload jobs``: read and change stored jobs, talking to the store directly.

No app module is needed: operators run these against a production store from a shell that
may not have the application's code, so everything works from ``--url`` alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
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
from offload.errors import InvalidCursor, JobNotFound, OffloadError
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


# --- changing jobs: one by id, or every job the filters select ----------------------------

# Bulk runs list this many refusals on the terminal; --json has them all.
SHOWN_SKIPS = 20
_VERBS = {"retry": "retried", "cancel": "cancelled", "purge": "purged"}

job_id_argument = typer.Argument(
    None, metavar="JOB_ID", help="The job to change; or choose jobs with the options below."
)
all_option = typer.Option(
    False, "--all", help="Every job the command can change; needed when no filter is given."
)
dry_run_option = typer.Option(
    False, "--dry-run", help="Count the jobs the filters select and change nothing."
)
bulk_json_option = typer.Option(False, "--json", help="Print the outcome of a bulk run as JSON.")


def _state_option(default: str) -> Any:
    return typer.Option(
        None,
        "--state",
        "-s",
        help=f"Jobs in these states ({default} when not given); repeat or comma-separate.",
    )


task_option = typer.Option(None, "--task", "-t", help="Jobs of these task names.")
queue_option = typer.Option(None, "--queue", "-q", help="Jobs on these queues.")


def _bulk_filter(
    command: str,
    job_id: str | None,
    state: list[str] | None,
    task: list[str] | None,
    queue: list[str] | None,
    *,
    all_jobs: bool,
    dry_run: bool,
    as_json: bool,
) -> JobFilter | None:
    """The filter of a bulk run, or ``None`` for a run on ``job_id`` alone.

    Without ``--state`` a run takes the states its action applies to (retry: failed and
    cancelled), so "retry the jobs of task X" does not report a refusal for every one that
    succeeded. A run with no filter at all must say ``--all``: a forgotten argument must not
    retry or cancel a whole store."""
    states, tasks, queues = _states(state), _split(task), _split(queue)
    filtered = bool(states or tasks or queues)
    if job_id is not None:
        if filtered or all_jobs:
            raise CliError(
                f"give a job id or filters, not both: `offload jobs {command} JOB_ID` changes "
                f"one job, `offload jobs {command} --state/--task/--queue` (or --all) every "
                "job they select",
                USAGE,
            )
        if dry_run or as_json:
            raise CliError(
                "--dry-run and --json go with a bulk run; drop them, or choose the jobs with "
                "--state/--task/--queue instead of a job id",
                USAGE,
            )
        return None
    if all_jobs and filtered:
        raise CliError(
            "--all means every job; give either --all or --state/--task/--queue, not both", USAGE
        )
    if not filtered and not all_jobs:
        raise CliError(
            f"no jobs chosen: give a JOB_ID, filters (--state, --task, --queue), or --all to "
            f"{command} every job it can",
            USAGE,
        )
    return JobFilter(states=states or admin.ACTION_STATES[command], tasks=tasks, queues=queues)


@app.command("retry")
def retry(
    job_id: str | None = job_id_argument,
    state: list[str] | None = _state_option("failed, cancelled"),
    task: list[str] | None = task_option,
    queue: list[str] | None = queue_option,
    all_jobs: bool = all_option,
    dry_run: bool = dry_run_option,
    as_json: bool = bulk_json_option,
    url: str | None = url_option,
) -> None:
    """Queue a failed or cancelled job again, with a fresh attempt budget; or every job the
    filters select."""
    flt = _bulk_filter(
        "retry", job_id, state, task, queue, all_jobs=all_jobs, dry_run=dry_run, as_json=as_json
    )
    if flt is None:
        record = _change(admin.retry_job, str(job_id), url)
        typer.echo(f"job {record.id} is {record.state.value} again")
        return
    _bulk(
        "retry",
        lambda store, progress: admin.bulk_action(
            store, "retry", flt, dry_run=dry_run, progress=progress
        ),
        dry_run=dry_run,
        as_json=as_json,
        url=url,
    )


@app.command("cancel")
def cancel(
    job_id: str | None = job_id_argument,
    state: list[str] | None = _state_option("queued, running"),
    task: list[str] | None = task_option,
    queue: list[str] | None = queue_option,
    all_jobs: bool = all_option,
    dry_run: bool = dry_run_option,
    as_json: bool = bulk_json_option,
    url: str | None = url_option,
) -> None:
    """Cancel a queued job now, or ask the worker running it to stop it; or every job the
    filters select."""
    flt = _bulk_filter(
        "cancel", job_id, state, task, queue, all_jobs=all_jobs, dry_run=dry_run, as_json=as_json
    )
    if flt is not None:
        _bulk(
            "cancel",
            lambda store, progress: admin.bulk_action(
                store, "cancel", flt, dry_run=dry_run, progress=progress
            ),
            dry_run=dry_run,
            as_json=as_json,
            url=url,
        )
        return
    try:
        record = _change(admin.cancel_job, str(job_id), url)
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
    older_than: str | None = typer.Option(
        None,
        "--older-than",
        metavar="DURATION",
        help="Only finished jobs that ended before this long ago: 30s, 15m, 12h, 7d, 2w.",
    ),
    state: list[str] | None = _state_option("succeeded, failed, cancelled"),
    task: list[str] | None = task_option,
    queue: list[str] | None = queue_option,
    all_jobs: bool = typer.Option(
        False, "--all", help="Every finished job, of any age; needed when nothing else is given."
    ),
    dry_run: bool = dry_run_option,
    as_json: bool = json_option,
    url: str | None = url_option,
) -> None:
    """Delete finished (succeeded, failed, cancelled) jobs; queued and running ones stay."""
    seconds = None if older_than is None else parse_duration(older_than)
    states, tasks, queues = _states(state), _split(task), _split(queue)
    unfinished = [s.value for s in states if not s.finished]
    if unfinished:
        raise CliError(
            f"purge deletes finished jobs only, not {', '.join(unfinished)} ones; choose "
            "--state from succeeded, failed, cancelled (cancel or delete the others first)",
            USAGE,
        )
    filtered = bool(states or tasks or queues)
    if all_jobs and (filtered or older_than is not None):
        raise CliError(
            "--all means every finished job of any age; give either --all or "
            "--older-than/--state/--task/--queue, not both",
            USAGE,
        )
    if not (filtered or all_jobs or older_than is not None):
        raise CliError(
            "no jobs chosen: give --older-than (e.g. 7d), filters (--state, --task, --queue), "
            "or --all to purge every finished job",
            USAGE,
        )
    age = "" if older_than is None else f" older than {older_than}"
    if filtered or all_jobs or dry_run:
        flt = JobFilter(states=states, tasks=tasks, queues=queues)
        _bulk(
            "purge",
            lambda store, progress: admin.bulk_purge(
                store, flt, seconds, dry_run=dry_run, progress=progress
            ),
            dry_run=dry_run,
            as_json=as_json,
            url=url,
            what="finished ",
            suffix=age,
        )
        return

    # Age alone: the store's own purge, one statement however many jobs go.
    async def act() -> int:
        async with connected(url, None) as conn:
            return await admin.purge_jobs(conn.store, seconds or 0.0)

    count = asyncio.run(act())
    if as_json:
        print_json({"purged": count})
    else:
        typer.echo(f"purged {count} finished job(s){age}")


def _bulk(
    command: str,
    run: Callable[[Store, Callable[[int, int], None]], Awaitable[admin.BulkOutcome]],
    *,
    dry_run: bool,
    as_json: bool,
    url: str | None,
    what: str = "",
    suffix: str = "",
) -> None:
    """Run one bulk action with a progress bar, then print its count and its refusals."""
    seen = [0, 0]  # done, total: how far a run got when the store fails in the middle

    async def act() -> admin.BulkOutcome:
        async with connected(url, None) as conn:
            shown = not (as_json or dry_run) and sys.stderr.isatty()
            with _progress_bar(command, enabled=shown) as bar:

                def progress(done: int, total: int) -> None:
                    seen[:] = [done, total]
                    bar(done, total)

                try:
                    return await run(conn.store, progress)
                except OffloadError as exc:
                    if seen[1] == 0:
                        raise
                    raise CliError(
                        f"{exc}; stopped after {seen[0]} of {_count(seen[1], '')}; run the "
                        "command again to go on with the rest"
                    ) from None

    # The CLI reports a run that stopped in its own one-line error; with no handler anywhere,
    # the library's warning about it would reach stderr as a second, unformatted line.
    if not logging.getLogger().handlers:
        logging.getLogger("offload.admin").addHandler(logging.NullHandler())
    outcome = asyncio.run(act())
    if as_json:
        print_json(
            {
                "matched": outcome.matched,
                "changed": outcome.changed,
                "skipped": [{"id": i, "reason": r} for i, r in outcome.skipped],
                "dry_run": dry_run,
            }
        )
        return
    if dry_run:
        count = _count(outcome.matched, what)
        typer.echo(f"would {command} {count}{suffix} (dry run: nothing changed)")
        return
    line = f"{_VERBS[command]} {_count(outcome.changed, what)}{suffix}"
    if not outcome.skipped:
        typer.echo(line)
        return
    typer.echo(f"{line}, {len(outcome.skipped)} skipped:")
    for job_id, reason in outcome.skipped[:SHOWN_SKIPS]:
        typer.echo(f"  {reason}" if job_id in reason else f"  {job_id}: {reason}")
    if len(outcome.skipped) > SHOWN_SKIPS:
        typer.echo(f"  and {len(outcome.skipped) - SHOWN_SKIPS} more (--json lists them all)")


def _count(n: int, what: str) -> str:
    return f"{n} {what}job" if n == 1 else f"{n} {what}jobs"


@contextmanager
def _progress_bar(label: str, *, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A bar on stderr, so stdout keeps only the count a script may read; it pulses while
    the jobs are selected and fills as they change, then clears."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
