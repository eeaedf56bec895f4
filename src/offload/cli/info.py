"""``offload info``: how many jobs sit in each queue and state, and which store that is."""

from __future__ import annotations

import asyncio

import typer

from offload.cli._common import (
    app_option,
    connected,
    json_option,
    mask_url,
    print_json,
    url_option,
    wide_console,
)
from offload.jobs import JobState


def info(
    as_json: bool = json_option,
    url: str | None = url_option,
    app_target: str | None = app_option,
) -> None:
    """Show job counts per queue and state for the store."""
    # rich only where a table is printed: it is a sixth of every command's start-up.
    from rich.table import Table
    from rich.text import Text

    async def fetch() -> tuple[str, dict[tuple[str, JobState], int]]:
        async with connected(url, app_target) as conn:
            return conn.store.url, await conn.store.counts()

    store_url, counts = asyncio.run(fetch())
    queues: dict[str, dict[str, int]] = {}
    totals = {state.value: 0 for state in JobState}
    for (queue, state), n in sorted(counts.items()):
        per_queue = queues.setdefault(queue, {s.value: 0 for s in JobState})
        per_queue[state.value] += n
        totals[state.value] += n
    masked = mask_url(store_url)
    if as_json:
        print_json({"url": masked, "queues": queues, "totals": totals})
        return
    console = wide_console()
    console.print(Text(f"store: {masked}"))
    table = Table("queue", *(s.value for s in JobState), "total")
    for queue, per_state in queues.items():
        table.add_row(Text(queue), *map(str, per_state.values()), str(sum(per_state.values())))
    table.add_section()
    table.add_row("all", *map(str, totals.values()), str(sum(totals.values())), style="bold")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
