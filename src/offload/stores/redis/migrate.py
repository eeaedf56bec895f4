"""The Redis layout's steps: what a process does on opening data of an older layout.

Layout 2 keeps the failed and cancelled jobs of each queue's ``done`` set again in sets of
their own (``QueueKeys.failed``, ``QueueKeys.cancelled``), so that ``Store.activity``
counts each state of a bucket with ZCOUNT instead of reading every finished job; and it
names every task with keyed jobs in ``Layout.keyed_tasks_key``, so that listing by a key
reads one key per task. Data of layout 1 has neither: the step fills both from the jobs
and keys there. Layout 3 keeps workflow steps (steps.py), in keys and fields only they
have: data of layout 2 needs nothing but its new number, which keeps processes of an older
offload, which would finish a step without moving its workflow on, away from it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis

from offload.stores.redis.layout import LAYOUT_VERSION, Layout

# Members of a done set filed per script call.
SPLIT_BATCH = 1000
# Keys a SCAN step looks at.
SCAN_COUNT = 1000

_SPLIT = resources.files("offload.stores.redis").joinpath("lua/split_done.lua").read_text()


async def upgrade(client: Redis, layout: Layout, version: int) -> None:
    """Bring data of layout ``version`` up to this code's; nothing when it is current.

    Safe beside other processes of this version, and run by each of them that opens the
    old data until one has recorded the new version: filing a job twice files it once,
    and a job that finished meanwhile was filed by the process that finished it."""
    if version >= LAYOUT_VERSION:
        return
    if version < 2:
        await _split_done(client, layout)
        await _register_keyed_tasks(client, layout)
    # Layout 3 adds keys only workflows write (steps.py): nothing to bring up to date.
    await client.set(layout.version_key, LAYOUT_VERSION)


async def _split_done(client: Redis, layout: Layout) -> None:
    queues: Any = await client.smembers(layout.queues_key)
    for raw in queues:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        keys = layout.queue(name)
        cursor = 0
        while True:
            # ZSCAN returns every member present throughout the scan at least once, even
            # while workers finish, retry and purge jobs beside it.
            cursor, pairs = await client.zscan(keys.done, cursor, count=SPLIT_BATCH)
            ids = [member for member, _ in pairs]
            if ids:
                await client.eval(_SPLIT, 3, keys.done, keys.failed, keys.cancelled, keys.job, *ids)
            if cursor == 0:
                break


async def _register_keyed_tasks(client: Redis, layout: Layout) -> None:
    """Name every task that holds an idempotency key in the registry of keyed tasks, from
    the keys' own names (``Layout.idempotency_key``): one pass over the keyspace, once."""
    head = f"{layout.prefix}:key:"
    tasks: set[str] = set()
    async for raw in client.scan_iter(match=f"{head}*", count=SCAN_COUNT):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        size, sep, rest = name[len(head) :].partition(":")
        if sep and size.isdigit():
            tasks.add(rest[: int(size)])
        if len(tasks) >= SCAN_COUNT:
            await client.sadd(layout.keyed_tasks_key, *tasks)
            tasks.clear()
    if tasks:
        await client.sadd(layout.keyed_tasks_key, *tasks)
