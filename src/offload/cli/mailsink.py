"""``offload mail-sink``: a local SMTP server that keeps mail instead of delivering it."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

import typer

from offload.cli._common import CliError


async def _await(value: Any) -> None:
    await value


def mail_sink(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback)."),
    port: int = typer.Option(1025, "--port", min=1, max=65535, help="SMTP port."),
    http_port: int = typer.Option(
        8025,
        "--http-port",
        min=0,
        max=65535,
        help="Port of the JSON view of captured mail (GET /messages); 0 turns it off.",
    ),
) -> None:
    """Capture outgoing mail in development: point the mailer at this SMTP port."""
    # Imported here: the email extra is optional, and the rest of the CLI must work without it.
    try:
        module = importlib.import_module("offload.email.sink")
    except ImportError as exc:
        raise CliError(
            f"the mail sink is not available ({exc}); install it with pip install 'offload[email]'"
        ) from None
    run_sink = getattr(module, "run_sink", None)
    if not callable(run_sink):
        raise CliError("this version of offload has no mail sink (offload.email.sink.run_sink)")
    where = f"SMTP on {host}:{port}"
    if http_port:
        where += f", captured mail at http://{host}:{http_port}/messages"
    banner = f"mail sink: {where}; Ctrl-C to stop"
    kwargs: dict[str, Any] = {"http_port": http_port or None}
    if "ready" in inspect.signature(run_sink).parameters:
        # Announce only once both servers listen, so a refused host or port is not preceded
        # by a line claiming success.
        kwargs["ready"] = lambda *_: typer.echo(banner)
    else:
        typer.echo(banner)
    try:
        result = run_sink(host, port, **kwargs)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
    except OSError as exc:
        raise CliError(f"cannot listen on {host}: {exc}; choose other ports with --port") from None
    except KeyboardInterrupt:
        typer.echo("mail sink stopped")


def register(app: typer.Typer) -> None:
    app.command("mail-sink")(mail_sink)
