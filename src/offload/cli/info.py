"""``offload info``: how many jobs sit in each queue and state, which store that is, and
the live workers where the store keeps a list of them (``WorkerRegistry``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

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
from offload.stores import WorkerInfo, WorkerRegistry


def info(
    as_json: bool = json_option,
    url: str | None = url_option,
    app_target: str | None = app_option,
) -> None:
    """Show job counts per queue and state for the store."""
    # rich only where a table is printed: it is a sixth of every command's start-up.
    from rich.table import Table
    from rich.text import Text

    async def fetch() -> tuple[str, dict[tuple[str, JobState], int], list[WorkerInfo] | None]:
        async with connected(url, app_target) as conn:
            store = conn.store
            workers = await store.workers() if isinstance(store, WorkerRegistry) else None
            return store.url, await store.counts(), workers

    store_url, counts, workers = asyncio.run(fetch())
    queues: dict[str, dict[str, int]] = {}
    totals = {state.value: 0 for state in JobState}
    for (queue, state), n in sorted(counts.items()):
        per_queue = queues.setdefault(queue, {s.value: 0 for s in JobState})
        per_queue[state.value] += n
        totals[state.value] += n
    masked = mask_url(store_url)
    if as_json:
        out: dict[str, object] = {"url": masked, "queues": queues, "totals": totals}
        if workers is not None:
            out["workers"] = [_worker_json(w) for w in workers]
        print_json(out)
        return
    console = wide_console()
    console.print(Text(f"store: {masked}"))
    table = Table("queue", *(s.value for s in JobState), "total")
    for queue, per_state in queues.items():
        table.add_row(Text(queue), *map(str, per_state.values()), str(sum(per_state.values())))
    table.add_section()
    table.add_row("all", *map(str, totals.values()), str(sum(totals.values())), style="bold")
    console.print(table)
    if workers is None:
        return
    if not workers:
        console.print(Text("workers: none alive"))
        return
    listed = Table("worker", "host", "pid", "queues", "running", "last heartbeat")
    for w in workers:
        listed.add_row(
            Text(w.id),
            Text(w.host),
            str(w.pid),
            Text(", ".join(w.queues) or "all"),
            f"{w.running}/{w.concurrency}",
            Text(_utc(w.seen_at)),
        )
    console.print(listed)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _worker_json(w: WorkerInfo) -> dict[str, object]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "queues": list(w.queues),
        "concurrency": w.concurrency,
        "running": w.running,
        "started_at": w.started_at,
        "seen_at": w.seen_at,
    }


def register(app: typer.Typer) -> None:
    app.command("info")(info)
