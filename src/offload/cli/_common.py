"""What every command shares: the expected-error type, app loading, store access, output."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from offload.app import Offload, resolve_url
from offload.records import JobRecord
from offload.stores import Store, open_store
from offload.stores._common import mask_url as mask_url

if TYPE_CHECKING:
    from rich.console import Console

# Exit codes: 2 is what Click uses for a wrong command line, so scripts can tell "you asked
# for something impossible" from "the store or the job said no" (1).
USAGE = 2
FAILURE = 1

URL_HELP = (
    "Store URL, e.g. sqlite:///offload.db or redis://host:6379/0; defaults to $OFFLOAD_URL, "
    "then to the app's URL, then to sqlite:///offload.db."
)
APP_HELP = "MODULE:ATTR of an Offload instance, used to decode results with the task's types."

url_option = typer.Option(None, "--url", help=URL_HELP, show_default=False)
app_option = typer.Option(None, "--app", metavar="MODULE:ATTR", help=APP_HELP)
json_option = typer.Option(False, "--json", help="Print JSON instead of a table.")


class CliError(Exception):
    """An expected failure: reported as one line on stderr, never as a traceback."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def help_without_command(ctx: typer.Context) -> None:
    """Print the group's help when no command was given, and exit as a usage error."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(USAGE)


def load_app(target: str) -> Offload:
    """Import ``module:attr`` the way uvicorn does, with the current directory importable."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:ATTR (e.g. myapp.tasks:jobs), got {target!r}", USAGE)
    # A console script's sys.path holds its own bin directory, not the directory it was run
    # from; putting cwd first lets `offload worker myapp:jobs` find ./myapp.py as `python -m`
    # would.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise CliError(
                f"module {module_name!r} not found; run from the directory that contains it "
                "or install its package",
                USAGE,
            ) from None
        raise  # the module exists but one of its own imports is missing: show where
    value: object = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CliError(
                f"module {module_name!r} has no attribute {attr!r}; "
                "name the variable that holds your Offload(...) instance",
                USAGE,
            ) from None
    if not isinstance(value, Offload):
        raise CliError(
            f"{target} is a {type(value).__name__}, not an Offload instance; "
            "point at the variable created with Offload(...)",
            USAGE,
        )
    return value


def store_url(url: str | None, app: Offload | None) -> str:
    if url:
        return url
    if app is not None:
        return app.url
    return resolve_url(None)


@asynccontextmanager
async def connected(url: str | None, app_target: str | None) -> AsyncIterator[ConnectedStore]:
    """Open the store named by ``--url`` (or the app's) for the length of one command."""
    app = load_app(app_target) if app_target else None
    resolved = store_url(url, app)
    store = open_store(resolved)
    await store.open()
    try:
        yield ConnectedStore(store, app)
    finally:
        await store.close()


class ConnectedStore:
    """An open store, plus the app when one was given to decode results."""

    def __init__(self, store: Store, app: Offload | None) -> None:
        self.store = store
        self.app = app

    def result_decoder(self, record: JobRecord) -> Callable[[str], Any] | None:
        """The task's own result codec when the app is known and declares the task; without
        it ``offload.admin.view`` reads the stored JSON."""
        task = self.app.tasks.get(record.task) if self.app is not None else None
        return None if task is None else task.codec.decode_result


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    match = _DURATION.match(text)
    if match is None:
        raise CliError(
            f"invalid duration {text!r}; use a number and a unit: 30s, 15m, 12h, 7d or 2w",
            USAGE,
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


# Tables written to a pipe or file would otherwise be cut to 80 columns, shortening ids that
# the next command needs whole.
PIPE_WIDTH = 200


def wide_console() -> Console:
    """A console for tables: terminal width on a terminal, wide when piped."""
    # Imported here: rich is a sixth of every command's start-up, and only tables need it.
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
