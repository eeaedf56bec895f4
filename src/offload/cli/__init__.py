"""The ``offload`` command line: ``worker``, ``jobs``, ``schedules``, ``info``, ``migrate``,
``mail-sink``, ``dashboard``.

Expected failures (a bad URL, a missing module, an unknown job id, a refused transition) end
the process with one line on stderr that names the fix and a non-zero status; only a bug in
offload itself shows a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from offload.cli import dashboard as _dashboard
from offload.cli import info as _info
from offload.cli import jobs as _jobs
from offload.cli import mailsink as _mailsink
from offload.cli import migrate as _migrate
from offload.cli import schedules as _schedules
from offload.cli import worker as _worker
from offload.cli._common import FAILURE, USAGE, CliError, help_without_command
from offload.errors import ConfigError, OffloadError

__all__ = ["app", "main"]

app = typer.Typer(
    name="offload",
    help="Durable background jobs: run workers and inspect the job store.",
    add_completion=False,
    # Expected errors are reported in one line by main(); anything else is a bug, and a plain
    # traceback is what a bug report needs.
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    help_without_command(ctx)


_worker.register(app)
app.add_typer(_jobs.app, name="jobs")
app.add_typer(_schedules.app, name="schedules")
_info.register(app)
_migrate.register(app)
_mailsink.register(app)
_dashboard.register(app)


def _fail(message: str, code: int) -> None:
    # One line, so that log collectors and `2>&1 | tail -1` keep the whole message.
    sys.stderr.write("error: " + " ".join(message.split()) + "\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``offload`` console script."""
    try:
        # standalone_mode=False hands every error back here instead of to Typer's boxed
        # rendering, so that each one can be reported in a single line.
        status = app(
            args=list(argv) if argv is not None else None,
            prog_name="offload",
            standalone_mode=False,
        )
    except typer.TyperException as exc:  # a malformed command line
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(exc.format_message() + hint, exc.exit_code)
    except typer.Abort:
        _fail("aborted", FAILURE)
    except CliError as exc:
        _fail(str(exc), exc.code)
    except ConfigError as exc:
        _fail(str(exc), USAGE)
    except OffloadError as exc:
        _fail(str(exc), FAILURE)
    raise SystemExit(status if isinstance(status, int) else 0)
