"""``offload migrate``: bring a store's layout up to date before the processes that use it
start (they do it themselves on start unless told not to)."""

from __future__ import annotations

import asyncio

import typer

from offload.cli._common import json_option, print_json, store_url, url_option
from offload.stores import open_store
from offload.stores._common import mask_url
from offload.stores.base import Migrations


def migrate(as_json: bool = json_option, url: str | None = url_option) -> None:
    """Create or upgrade the store's tables; safe to run twice, or beside starting workers."""
    resolved = store_url(url, None)
    store = open_store(resolved)

    async def act() -> tuple[int | None, list[int]]:
        if isinstance(store, Migrations):
            return await store.migrate()
        # SQLite files migrate when opened (under their write lock); Redis and memory keep
        # no layout steps.
        await store.open()
        await store.close()
        return None, []

    version, applied = asyncio.run(act())
    masked = mask_url(resolved)
    if as_json:
        print_json({"url": masked, "version": version, "applied": applied})
    elif version is None:
        typer.echo(f"{masked}: up to date (this store brings its layout up to date on open)")
    elif applied:
        steps = ", ".join(f"{n:04d}" for n in applied)
        typer.echo(f"{masked}: migrated to layout version {version} (applied {steps})")
    else:
        typer.echo(f"{masked}: already at layout version {version}")


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
