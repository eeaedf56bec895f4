"""``offload dashboard``: the web dashboard on its own, like Flower, with credentials always on.

It binds loopback unless told otherwise, and it never runs without a password: one from
``OFFLOAD_DASHBOARD_PASSWORD`` (and ``OFFLOAD_DASHBOARD_USER``), or one made at start-up and
printed once, so that the first run on a laptop works and no run is open to strangers.
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import typer

from offload.cli._common import USAGE, CliError, app_option, load_app, store_url, url_option
from offload.errors import ConfigError

DEFAULT_PORT = 8081


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard(
    url: str | None = url_option,
    app_target: str | None = app_option,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; loopback unless you say otherwise."
    ),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port."),
    mail_sink: str | None = typer.Option(
        None,
        "--mail-sink",
        metavar="URL",
        help="JSON view of a running `offload mail-sink` (e.g. http://127.0.0.1:8025), "
        "for the mail page.",
    ),
    log_url: str | None = typer.Option(
        None,
        "--log-url",
        help="Link from a job to its log lines, with {job_id} and {request_id} filled in.",
    ),
) -> None:
    """Serve the dashboard alone: jobs, schedules (with --app) and captured mail."""
    try:
        import uvicorn
        from fastapi import FastAPI

        from offload.dashboard import DashboardSettings, basic_auth
    except ImportError as exc:
        raise CliError(
            f"the dashboard is not installed ({exc}); install it with "
            "pip install 'offload[dashboard]'"
        ) from None
    from offload import Offload

    app = load_app(app_target) if app_target else None
    jobs = app if app is not None else Offload(store_url(url, None), embedded_worker=False)
    if app is not None and url:
        raise CliError("give --url or --app, not both: the app names its own store", USAGE)

    settings = DashboardSettings()
    user = settings.user
    if settings.password is not None:
        password = settings.password.get_secret_value()
        made = False
    else:
        password = secrets.token_urlsafe(18)
        made = True
    try:
        auth = basic_auth(user, password)
        secret = None if settings.secret is None else settings.secret.get_secret_value()
        router = jobs.dashboard(auth=auth, mail_sink=mail_sink, secret=secret, log_url=log_url)
    except ConfigError as exc:
        raise CliError(str(exc), USAGE) from None

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        # The store only: the dashboard process runs no worker, whatever the app says.
        await jobs.open()
        try:
            yield
        finally:
            await jobs.close()

    server_app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    server_app.include_router(router)

    if not _is_loopback(host):
        sys.stderr.write(
            f"warning: the dashboard listens on {host}, reachable from other machines; "
            "serve it over HTTPS (a reverse proxy), since Basic credentials travel with "
            "every request\n"
        )
    shown = f"http://{host}:{port}/"
    typer.echo(f"dashboard for {jobs.url}: {shown}")
    if made:
        # Printed once, here: it is nowhere else, and a restart makes a new one.
        typer.echo(
            f"sign in as {user} with password {password} (set OFFLOAD_DASHBOARD_PASSWORD "
            "to choose one)"
        )
    config = uvicorn.Config(server_app, host=host, port=port, log_level="warning")
    try:
        uvicorn.Server(config).run()
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc}; choose another --port") from None


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
