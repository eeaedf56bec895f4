"""The Redis store (``redis://host:6379/0``): every transition is one Lua script.

Each queue's keys share one hash tag, so a queue lives in one Cluster slot and every script
touches one slot; the key layout and what each persistence setting means for durability are in
``docs/redis.md`` (and in ``redis_layout.py``). Time comes from the server (``TIME`` inside the
scripts), so worker clocks never decide when a lease lapses. Per job the hot path costs one
round trip to enqueue and a share of one round trip per batch to claim and to complete.

A dropped connection is retried with exponential backoff inside redis-py; an operation that
still fails within ``op_timeout`` raises ``StoreUnavailable`` so that a producer is never left
hanging while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from offload.errors import InvalidTransition, StoreUnavailable
from offload.jobs import JobRecord, JobState, Progress
from offload.stores._common import (
    decode_cursor,
    dump_error,
    dump_progress,
    encode_cursor,
    lease_expired_error,
    lease_requeued_error,
)
from offload.stores.base import JobFilter, NewJob, Outcome, Page
from offload.stores.redis_layout import (
    Layout,
    RedisOptions,
    Scripts,
    connection_class,
    parse_redis_url,
    record,
    record_from,
)

# redis-py retries a command on a dropped connection this many times, backing off from 50 ms
# to at most 0.5 s: enough to ride out a restart of a few seconds within op_timeout.
RETRIES = 8
BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.5
# Operations in flight per store and process: a burst of concurrent enqueues waits for a
# free connection rather than opening hundreds of sockets. (An asyncio.Semaphore: redis-py's
# blocking pool costs a loop iteration per command even when a connection is free.)
MAX_CONNECTIONS = 32
# Connecting is quick on a LAN; a black-holed host must not eat the whole op_timeout at once.
CONNECT_TIMEOUT = 1.0
# How stale the cached list of queues may be for operations over all queues.
QUEUES_MAX_AGE = 1.0
# Jobs a reaper or purge step handles per script call, so one call never blocks the server.
REAP_BATCH = 1000
PURGE_BATCH = 500
# After a failed blocking wait, pause this long so a worker does not spin while Redis is down.
WAIT_ERROR_PAUSE = 0.2

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
_NUL = "\x00"
# Placeholder the requeue script replaces with the (JSON-escaped) id of the dead worker.
_WORKER_MARK = "\x00W"


class RedisStore:
    """See the module docstring; ``url`` options are described in ``docs/redis.md``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opts: RedisOptions = parse_redis_url(url)
        self._layout = Layout(self._opts.prefix)
        self._scripts = Scripts()
        self._client: Redis | None = None
        self._blocking: Redis | None = None
        self._known: set[str] = set()
        self._known_at = -math.inf
        self._registered: set[str] = set()
        # Queue of each job claimed through this store, so heartbeats and completions (which
        # carry only ids) go straight to the right slot.
        self._where: dict[str, str] = {}
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._requeue_errors = (
            dump_error(lease_requeued_error(_WORKER_MARK)) or "",
            dump_error(lease_expired_error(_WORKER_MARK)) or "",
        )

    # --- plumbing --------------------------------------------------------------------

    def _make_client(self, blocking: bool) -> Redis:
        retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES)
        pool = ConnectionPool.from_url(
            self._opts.client_url,
            # The semaphore in _guard keeps us below this; the pool never refuses.
            max_connections=MAX_CONNECTIONS + 8,
            connection_class=connection_class(self._opts.client_url),
            decode_responses=True,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_connect_timeout=CONNECT_TIMEOUT,
            # Blocking calls wait server-side as long as asked; the others are bounded by
            # op_timeout around the whole call.
            socket_timeout=None if blocking else self._opts.op_timeout,
            socket_keepalive=True,
        )
        return Redis.from_pool(pool)

    async def open(self) -> None:
        if self._client is not None:
            return
        client = self._make_client(blocking=False)
        try:
            async with self._guard("connecting"):
                await client.ping()
                await self._scripts.load(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._blocking = self._make_client(blocking=True)
        await self._refresh_known(0.0)

    async def close(self) -> None:
        client, blocking = self._client, self._blocking
        self._client = self._blocking = None
        for c in (client, blocking):
            if c is not None:
                await c.aclose()

    @property
    def _redis(self) -> Redis:
        client = self._client
        if client is None:
            raise StoreUnavailable(
                "the Redis store is not open: use `async with jobs:` or jobs.lifespan"
            )
        return client

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        timeout = self._opts.op_timeout
        try:
            async with asyncio.timeout(timeout), self._slots:
                yield
        except _UNREACHABLE as exc:
            raise StoreUnavailable(
                f"{what} failed: Redis at {self._opts.display_url} did not answer within "
                f"{timeout:g} s ({type(exc).__name__}: {exc or 'timed out'}). Check that "
                "redis-server is running and reachable from here, and the URL's password and "
                "TLS settings; the operation may not have been applied."
            ) from exc

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        return await self._scripts.run(self._redis, commands)

    async def _refresh_known(self, max_age: float = QUEUES_MAX_AGE) -> set[str]:
        if time.monotonic() - self._known_at >= max_age:
            members = await self._redis.smembers(self._layout.queues_key)  # type: ignore[misc,unused-ignore]
            self._known = cast("set[str]", members) | self._registered
            self._known_at = time.monotonic()
        return self._known

    async def _queue_names(self, queues: Sequence[str] | None) -> list[str]:
        if queues is not None:
            return list(dict.fromkeys(queues))
        return sorted(await self._refresh_known())

    async def _locate(self, ids: Iterable[str]) -> dict[str, str]:
        """The queue of each id, from this process's claims or else by asking each queue."""
        found: dict[str, str] = {}
        unknown: list[str] = []
        for job_id in ids:
            queue = self._where.get(job_id)
            if queue is None:
                unknown.append(job_id)
            else:
                found[job_id] = queue
        if unknown:
            names = sorted(await self._refresh_known(0.0))
            probes = [(i, q) for i in unknown for q in names]
            if probes:
                layout = self._layout
                hits = await self._run([("EXISTS", layout.queue(q).job + i) for i, q in probes])
                for (job_id, queue), hit in zip(probes, hits, strict=True):
                    if hit:
                        found.setdefault(job_id, queue)
        return found

    async def now(self) -> float:
        async with self._guard("reading the clock"):
            seconds, micros = await self._redis.time()
        return seconds + micros / 1_000_000

    # --- writes ------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        jobs = list(jobs)
        if not jobs:
            return []
        layout, scripts = self._layout, self._scripts
        async with self._guard("enqueue"):
            targets = [(j.queue, j.id) for j in jobs]
            keyed = [i for i, j in enumerate(jobs) if j.key is not None]
            if keyed:
                # Reserve each key first; a key already held names the job that holds it,
                # which the enqueue script then returns (or creates, if its creator died
                # between the two steps).
                held = await self._run(
                    [
                        scripts.evalsha(
                            "reserve",
                            [layout.idempotency_key(jobs[i].task, jobs[i].key or "")],
                            [f"{jobs[i].queue}{_NUL}{jobs[i].id}"],
                        )
                        for i in keyed
                    ]
                )
                for i, holder in zip(keyed, held, strict=True):
                    if holder is not None:
                        queue, _, job_id = holder.partition(_NUL)
                        targets[i] = (queue, job_id)
            groups: dict[str, list[int]] = {}
            for i, (queue, _) in enumerate(targets):
                groups.setdefault(queue, []).append(i)
            commands: list[tuple[Any, ...]] = []
            fresh = [q for q in groups if q not in self._registered]
            if fresh:
                # New queues join the registry (and wake workers serving all queues) before
                # their first job exists, so no job sits in a queue nobody knows about.
                commands.append(("SADD", layout.queues_key, *fresh))
                commands.append(("LPUSH", layout.wake_key, "1"))
                commands.append(("LTRIM", layout.wake_key, 0, 63))
            for queue, members in groups.items():
                keys = layout.queue(queue)
                args: list[Any] = [keys.job, queue]
                for i in members:
                    j = jobs[i]
                    args += (
                        targets[i][1],
                        j.task,
                        j.args,
                        j.kwargs,
                        j.priority,
                        j.max_attempts,
                        "" if j.run_at is None else repr(j.run_at),
                        j.delay,
                        "" if j.timeout is None else j.timeout,
                        "" if j.key is None else j.key,
                        json.dumps(j.meta) if j.meta else "",
                    )
                commands.append(
                    scripts.evalsha(
                        "enqueue",
                        [keys.ready, keys.delayed, keys.all, keys.counts, keys.wake],
                        args,
                    )
                )
            results = await self._run(commands)
        if fresh:
            self._registered.update(fresh)
            self._known.update(fresh)
        out: list[JobRecord | None] = [None] * len(jobs)
        for (_, members), result in zip(groups.items(), results[-len(groups) :], strict=True):
            enqueued_at = float(result[0])
            for i, item in zip(members, result[1:], strict=True):
                if isinstance(item, list):
                    out[i] = record(item)
                    continue
                j = jobs[i]
                queue, job_id = targets[i]
                out[i] = JobRecord(
                    id=job_id,
                    task=j.task,
                    queue=queue,
                    args=j.args,
                    kwargs=j.kwargs,
                    state=JobState.QUEUED,
                    priority=j.priority,
                    attempt=0,
                    max_attempts=j.max_attempts,
                    run_at=float(item),
                    enqueued_at=enqueued_at,
                    timeout=j.timeout,
                    key=j.key,
                    meta=dict(j.meta),
                )
        return [r for r in out if r is not None]

    async def claim(
        self, queues: Sequence[str] | None, limit: int, worker_id: str, ttl: float
    ) -> list[JobRecord]:
        layout, scripts = self._layout, self._scripts
        async with self._guard("claim"):
            names = await self._queue_names(queues)
            if not names or limit <= 0:
                return []
            if len(names) == 1:
                shares = {names[0]: limit}
            else:
                shares = await self._split(names, limit)
                if not shares:
                    return []
            commands = []
            for queue, n in shares.items():
                keys = layout.queue(queue)
                commands.append(
                    scripts.evalsha(
                        "claim",
                        [keys.ready, keys.delayed, keys.running, keys.counts],
                        [keys.job, n, worker_id, ttl],
                    )
                )
            results = await self._run(commands)
        claimed = [record(flat) for result in results for flat in result[1:]]
        if len(shares) > 1:
            claimed.sort(key=lambda r: (-r.priority, r.id))
        where = self._where
        for r in claimed:
            where[r.id] = r.queue
        return claimed

    async def _split(self, names: list[str], limit: int) -> dict[str, int]:
        """Share ``limit`` among queues by the priority and age of their first ready jobs,
        so that a claim over several queues still takes the best jobs first."""
        layout, scripts = self._layout, self._scripts
        commands = []
        for queue in names:
            keys = layout.queue(queue)
            commands.append(scripts.evalsha("peek", [keys.ready, keys.delayed], [keys.job, limit]))
        heads: list[tuple[float, str, str]] = []
        for queue, flat in zip(names, await self._run(commands), strict=True):
            heads.extend((float(flat[k + 1]), flat[k], queue) for k in range(0, len(flat), 2))
        heads.sort()
        shares: dict[str, int] = {}
        for _, _, queue in heads[:limit]:
            shares[queue] = shares.get(queue, 0) + 1
        return shares

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        lost: set[str] = set()
        cancel: set[str] = set()
        if not leases:
            return lost, cancel
        async with self._guard("heartbeat"):
            where = await self._locate(job_id for job_id, _ in leases)
            groups: dict[str, list[Any]] = {}
            for job_id, attempt in leases:
                queue = where.get(job_id)
                if queue is None:
                    lost.add(job_id)
                else:
                    groups.setdefault(queue, []).extend((job_id, attempt))
            commands = []
            for queue, pairs in groups.items():
                keys = self._layout.queue(queue)
                commands.append(
                    self._scripts.evalsha(
                        "heartbeat", [keys.running], [keys.job, worker_id, ttl, *pairs]
                    )
                )
            results = await self._run(commands) if commands else []
        for gone, asked in results:
            lost.update(gone)
            cancel.update(asked)
        return lost, cancel

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        outcomes = list(outcomes)
        if not outcomes:
            return []
        async with self._guard("storing job outcomes"):
            where = await self._locate(o.id for o in outcomes)
            groups: dict[str, list[int]] = {}
            for i, o in enumerate(outcomes):
                queue = where.get(o.id)
                if queue is not None:
                    groups.setdefault(queue, []).append(i)
            commands = []
            for queue, members in groups.items():
                keys = self._layout.queue(queue)
                args: list[Any] = [keys.job]
                for i in members:
                    o = outcomes[i]
                    args += (
                        o.id,
                        o.worker_id,
                        o.attempt,
                        o.kind.value,
                        "" if o.result is None else o.result,
                        dump_error(o.error) or "",
                        o.delay,
                    )
                commands.append(
                    self._scripts.evalsha(
                        "complete",
                        [
                            keys.ready,
                            keys.delayed,
                            keys.running,
                            keys.done,
                            keys.counts,
                            keys.wake,
                        ],
                        args,
                    )
                )
            results = await self._run(commands) if commands else []
        applied = [False] * len(outcomes)
        for members, flags in zip(groups.values(), results, strict=True):
            for i, flag in zip(members, flags, strict=True):
                applied[i] = flag == 1
        for o in outcomes:
            self._where.pop(o.id, None)
        return applied

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        progress = dump_progress(Progress(fraction, message))
        async with self._guard("storing progress"):
            queue = (await self._locate([job_id])).get(job_id)
            if queue is None:
                return False
            job_key = self._layout.queue(queue).job + job_id
            done = await self._scripts.call(
                self._redis, "progress", [job_key], [worker_id, attempt, progress]
            )
        return bool(done == 1)

    async def requeue_expired(self) -> int:
        again, exhausted = self._requeue_errors
        async with self._guard("requeueing expired leases"):
            names = sorted(await self._refresh_known())
            commands = []
            for queue in names:
                keys = self._layout.queue(queue)
                commands.append(
                    self._scripts.evalsha(
                        "requeue",
                        [keys.ready, keys.running, keys.done, keys.counts, keys.wake],
                        [keys.job, REAP_BATCH, again, exhausted],
                    )
                )
            results = await self._run(commands) if commands else []
        return sum(int(n) for n in results)

    async def cancel(self, job_id: str) -> JobRecord | None:
        async with self._guard("cancel"):
            queue = (await self._locate([job_id])).get(job_id)
            if queue is None:
                return None
            keys = self._layout.queue(queue)
            flat = await self._scripts.call(
                self._redis,
                "cancel",
                [keys.ready, keys.delayed, keys.done, keys.counts, keys.job + job_id],
                [job_id],
            )
        return None if flat is None else record(flat)

    async def retry(self, job_id: str) -> JobRecord | None:
        async with self._guard("retry"):
            queue = (await self._locate([job_id])).get(job_id)
            if queue is None:
                return None
            keys = self._layout.queue(queue)
            reply = await self._scripts.call(
                self._redis,
                "retry",
                [keys.ready, keys.done, keys.counts, keys.wake, keys.job + job_id],
                [job_id],
            )
        if reply is None:
            return None
        if isinstance(reply, str):
            raise InvalidTransition(
                f"job {job_id} is {reply}; only failed or cancelled jobs can be retried"
            )
        return record(reply)

    async def purge(self, older_than: float) -> int:
        layout, scripts = self._layout, self._scripts
        total = 0
        async with self._guard("purge"):
            names = sorted(await self._refresh_known(0.0))
        for queue in names:
            keys = layout.queue(queue)
            while True:
                async with self._guard("purge"):
                    flat = await scripts.call(
                        self._redis, "purge_scan", [keys.done], [keys.job, older_than, PURGE_BATCH]
                    )
                    if not flat:
                        break
                    ids = flat[0::3]
                    # Keys go first: a new job may take a freed key at once, while the old
                    # job (still present for a moment) holds no key any more.
                    releases = [
                        scripts.evalsha(
                            "release_key",
                            [layout.idempotency_key(task, key)],
                            [f"{queue}{_NUL}{job_id}"],
                        )
                        for job_id, task, key in zip(ids, flat[1::3], flat[2::3], strict=True)
                        if key
                    ]
                    if releases:
                        await self._run(releases)
                    total += int(
                        await scripts.call(
                            self._redis,
                            "purge_drop",
                            [keys.done, keys.all, keys.counts],
                            [keys.job, older_than, *ids],
                        )
                    )
                if len(ids) < PURGE_BATCH:
                    break
        return total

    # --- reads -------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        layout = self._layout
        async with self._guard("reading a job"):
            queue = self._where.get(job_id)
            names = [queue] if queue is not None else sorted(await self._refresh_known())
            asked: set[str] = set()
            while names:
                replies = await self._run(
                    [("HGETALL", layout.queue(q).job + job_id) for q in names]
                )
                for fields in replies:
                    if fields:
                        return record_from(fields)
                asked.update(names)
                names = sorted(await self._refresh_known(0.0) - asked)
        return None

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        after = decode_cursor(cursor) if cursor else None
        wanted = limit + 1
        scan = max(1000, 10 * wanted)
        states = [s.value for s in filter.states]
        tasks = list(filter.tasks)
        tail = [wanted, len(states), *states, len(tasks), *tasks]
        layout, scripts = self._layout, self._scripts
        async with self._guard("listing jobs"):
            names = (
                list(dict.fromkeys(filter.queues))
                if filter.queues
                else sorted(await self._refresh_known(0.0))
            )
            bounds = dict.fromkeys(names, "+" if after is None else f"({after}")
            # Per queue: every id at or above its frontier has been examined ("" = all).
            frontier: dict[str, str] = {}
            matches: list[JobRecord] = []
            open_queues = names
            while open_queues:
                commands = [
                    scripts.evalsha(
                        "list",
                        [layout.queue(q).all],
                        [layout.queue(q).job, bounds[q], scan, *tail],
                    )
                    for q in open_queues
                ]
                for queue, reply in zip(open_queues, await self._run(commands), strict=True):
                    matches.extend(record(flat) for flat in reply[2:])
                    frontier[queue] = "" if reply[0] == "1" else reply[1]
                    bounds[queue] = f"({reply[1]}"
                open_queues = [q for q in names if frontier[q]]
                # No unexamined id anywhere is above the highest open frontier.
                floor = max((frontier[q] for q in open_queues), default="")
                if sum(1 for m in matches if m.id >= floor) >= wanted:
                    break
        matches.sort(key=lambda r: r.id, reverse=True)
        page = matches[:limit]
        more = len(matches) > limit
        return Page(page, encode_cursor(page[-1].id) if more and page else None)

    async def counts(self) -> dict[tuple[str, JobState], int]:
        async with self._guard("counting jobs"):
            names = sorted(await self._refresh_known(0.0))
            replies = (
                await self._run([("HGETALL", self._layout.queue(q).counts) for q in names])
                if names
                else []
            )
        out: dict[tuple[str, JobState], int] = {}
        for queue, fields in zip(names, replies, strict=True):
            for state, n in fields.items():
                if int(n) > 0:
                    out[(queue, JobState(state))] = int(n)
        return out

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        layout, scripts = self._layout, self._scripts
        async with self._guard("reading the next run time"):
            names = await self._queue_names(queues)
            if not names:
                return None
            replies = await self._run(
                [
                    scripts.evalsha(
                        "next",
                        [layout.queue(q).ready, layout.queue(q).delayed],
                        [layout.queue(q).job],
                    )
                    for q in names
                ]
            )
        times = [float(r) for r in replies if r is not None]
        return min(times) if times else None

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        """Block in ``BLPOP`` on the queues' wake-up lists (plus the registry's, when serving
        all queues, so a brand-new queue wakes us too). Writers push a token per change, so
        a change made just before we block is still waiting for us when we do."""
        blocking = self._blocking
        if timeout <= 0 or blocking is None:
            return
        layout = self._layout
        if queues is None:
            keys = [layout.queue(q).wake for q in sorted(self._known)] + [layout.wake_key]
        else:
            keys = [layout.queue(q).wake for q in dict.fromkeys(queues)]
        # BLPOP reads 0 as "forever" and rounds to milliseconds.
        seconds = max(timeout, 0.01)
        try:
            async with asyncio.timeout(seconds + self._opts.op_timeout):
                await blocking.blpop(keys, timeout=seconds)  # type: ignore[misc,unused-ignore]
        except _UNREACHABLE:
            await asyncio.sleep(min(timeout, WAIT_ERROR_PAUSE))
