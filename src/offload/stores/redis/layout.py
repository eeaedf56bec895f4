"""The Redis store's URL options, key layout and row decoding.

Kept apart from ``store.py`` so that the store module reads as the list of operations, and
so that the key layout (which ``docs/redis.md`` documents) lives in one place.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.exceptions import ResponseError

from offload.errors import ConfigError
from offload.records import JobRecord, JobState, WaitingReason
from offload.stores._common import load_error, load_history, load_progress, mask_url

log = logging.getLogger("offload.store.redis")

# Options offload reads from the URL itself; everything else in the query goes to redis-py.
OWN_OPTIONS = {"prefix", "op_timeout"}
# redis-py URL options that make sense for a store (TLS ones are for rediss://).
PASSTHROUGH = set(URL_QUERY_ARGUMENT_PARSERS) | {
    "client_name",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
}
DEFAULT_PREFIX = "offload"
# Upper bound for one store operation, retries included: long enough to ride out a brief
# failover, short enough that a producer gets StoreUnavailable instead of a hung request.
DEFAULT_OP_TIMEOUT = 5.0

_STATES = {s.value: s for s in JobState}
_WAITING = {w.value: w for w in WaitingReason}
# Separates a queue name from a job id where Redis stores the pair as one string.
NUL = "\x00"


@dataclass(frozen=True, slots=True)
class RedisOptions:
    client_url: str
    """The URL handed to redis-py, without offload's own options."""
    display_url: str
    """The URL with any password masked, for messages and logs."""
    prefix: str
    op_timeout: float


def parse_redis_url(url: str) -> RedisOptions:
    """``redis[s]://[[user]:password@]host[:port][/db][?prefix=...&op_timeout=...]``."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ConfigError(
            f"invalid Redis URL {mask_url(url)!r}: use redis://host:6379/0 "
            "(or rediss:// for TLS), e.g. redis://:password@localhost:6379/0?prefix=offload"
        )
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in OWN_OPTIONS:
            own[name] = value
        elif name in PASSTHROUGH:
            rest.append((name, value))
        else:
            known = sorted(OWN_OPTIONS | PASSTHROUGH)
            raise ConfigError(
                f"unknown Redis URL option {name!r} in {mask_url(url)!r}; known: {known}"
            )
    prefix = own.get("prefix", DEFAULT_PREFIX)
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigError(
            f"prefix={prefix!r} in {mask_url(url)!r}: use a non-empty name without braces"
        )
    try:
        op_timeout = float(own.get("op_timeout", DEFAULT_OP_TIMEOUT))
    except ValueError:
        op_timeout = -1.0
    if not op_timeout > 0:
        raise ConfigError(
            f"op_timeout={own.get('op_timeout')!r} in {mask_url(url)!r}: give seconds, e.g. 5"
        )
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    return RedisOptions(client_url, mask_url(url), prefix, op_timeout)


class QueueKeys:
    """The keys of one queue. All share the hash tag ``{prefix:q:queue}``, so in a Redis
    Cluster a queue lives in one slot and every script touches one slot."""

    __slots__ = (
        "all",
        "cancelled",
        "counts",
        "delayed",
        "done",
        "failed",
        "held",
        "job",
        "ready",
        "running",
        "wake",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        base = f"{{{prefix}:q:{queue}}}"
        self.ready = f"{base}:ready"
        self.delayed = f"{base}:delayed"
        self.running = f"{base}:running"
        self.done = f"{base}:done"
        # The failed and cancelled jobs of done again, each state apart (same score), so
        # that activity counts a bucket of each state with ZCOUNT: succeeded is the rest.
        self.failed = f"{base}:failed"
        self.cancelled = f"{base}:cancelled"
        self.all = f"{base}:all"
        self.counts = f"{base}:counts"
        self.wake = f"{base}:wake"
        self.job = f"{base}:job:"
        # Every job of the queue held for a concurrency slot (flow.py), scored as the ready
        # set scores it: held jobs are in neither ready nor delayed, and listing reads them
        # here.
        self.held = f"{base}:held"

    def limit(self, kind: str, key: str) -> str:
        """A flow-control key of this queue (``conc_running``, ``conc_held``, ``bucket`` or
        ``rate_waiting`` of a limit's key): under the queue's hash tag, so a limit holds per
        queue. The scripts build the same names from the job key prefix (``flow_key``)."""
        return f"{self.job[:-4]}{kind}:{key}"


# The version of the layout below, kept in ``{prefix}:layout``. A process refuses data of a
# newer layout than its own: it would write keys without keeping what the newer layout keeps,
# and neither process would notice (the SQLite store's ``SCHEMA_VERSION`` is the same idea).
# 1: the first layout; 2: failed and cancelled jobs also in sets of their own, and the
# registry of tasks with keyed jobs (migrate.py); 3: workflow steps (steps.py), whose
# links a process of an older layout would not follow when it finishes one.
LAYOUT_VERSION = 3


class Layout:
    """Key names for one prefix; queue keys are built once per queue and cached."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queues_key = f"{{{prefix}}}:queues"
        self.wake_key = f"{{{prefix}}}:wake"
        self.version_key = f"{{{prefix}}}:layout"
        # Every task that enqueued a job with an idempotency key, so that listing by a key
        # of any task reads one key per task instead of scanning every job.
        self.keyed_tasks_key = f"{{{prefix}}}:keyed_tasks"
        self._queues: dict[str, QueueKeys] = {}

    def queue(self, name: str) -> QueueKeys:
        keys = self._queues.get(name)
        if keys is None:
            keys = self._queues[name] = QueueKeys(self.prefix, name)
        return keys

    def waiter(self, worker_id: str) -> str:
        """A worker's own wake-up list: pushed to end its blocking wait when it stops."""
        return f"{{{self.prefix}}}:waiter:{worker_id}"

    def idempotency_key(self, task: str, key: str) -> str:
        # Length-prefixed so that ("a:b", "c") and ("a", "b:c") never collide; no hash tag,
        # so keys spread over a cluster's slots.
        return f"{self.prefix}:key:{len(task)}:{task}:{key}"

    def schedule(self, name: str) -> str:
        # One hash per schedule, no hash tag: every schedule operation touches one key.
        return f"{self.prefix}:schedule:{name}"


FIELDS = (
    "id",
    "task",
    "queue",
    "args",
    "kwargs",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "run_at",
    "enqueued_at",
    "timeout",
    "started_at",
    "finished_at",
    "lease_until",
    "worker_id",
    "key",
    "result",
    "error",
    "progress",
    "meta",
    "cancel_requested",
)
"""A job's hash fields in the order the scripts return them (``row`` in prelude.lua); the
reads' rows (``listed``) add ``waiting``, why a queued job is held back (flow.py)."""


def _opt_float(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value)


def record(row: list[Any]) -> JobRecord:
    """A job from the fixed-order row the scripts return; decoding by position avoids
    building a dict per job on the claim path."""
    (
        id_,
        task,
        queue,
        args,
        kwargs,
        state,
        priority,
        attempt,
        max_attempts,
        run_at,
        enqueued_at,
        timeout,
        started_at,
        finished_at,
        lease_until,
        worker_id,
        key,
        result,
        error,
        progress,
        meta,
        cancel_requested,
        *waiting,
    ) = row
    return JobRecord(
        id=id_,
        task=task,
        queue=queue,
        args=args,
        kwargs=kwargs,
        state=_STATES[state],
        priority=int(priority),
        attempt=int(attempt),
        max_attempts=int(max_attempts),
        run_at=float(run_at),
        enqueued_at=float(enqueued_at),
        timeout=None if timeout is None else float(timeout),
        started_at=None if started_at is None else float(started_at),
        finished_at=None if finished_at is None else float(finished_at),
        # A lease means something only while the job runs: the scripts leave the last one
        # in the hash when a job ends, rather than spend a command a job deleting it.
        lease_until=None if lease_until is None or state != "running" else float(lease_until),
        worker_id=worker_id,
        key=key,
        result=result,
        error=None if error is None else load_error(error),
        progress=None if progress is None else load_progress(progress),
        meta=json.loads(meta) if meta else {},
        cancel_requested=cancel_requested == "1",
        waiting_reason=_WAITING[waiting[0]] if waiting and waiting[0] else None,
    )


def record_from(fields: dict[str, str]) -> JobRecord:
    """A job from HGETALL's mapping, with its error history: the scripts' rows leave it out
    (a claim has no use for it), a whole job's read has it."""
    job = record([*(fields.get(name) for name in FIELDS), fields.get("waiting")])
    raw = fields.get("history")
    if raw is not None:
        job.history = load_history(raw)
    return job


async def check_layout(client: Redis, layout: Layout, where: str) -> int:
    """Record this layout's version for data that has none; refuse data of a newer one.
    Returns the data's version (older data is brought up to date by ``migrate.upgrade``)."""
    pipe = client.pipeline(transaction=False)
    for command in layout_commands(layout):
        pipe.execute_command(*command)
    *_, value = await pipe.execute()
    return check_layout_version(value, layout, where)


def layout_commands(layout: Layout) -> list[tuple[Any, ...]]:
    """``check_layout``'s round trip, for a raw exchange; the last reply is the version."""
    return [("SET", layout.version_key, LAYOUT_VERSION, "NX"), ("GET", layout.version_key)]


def check_layout_version(value: Any, layout: Layout, where: str) -> int:
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{layout.version_key} at {where} holds {value!r}, not an offload layout version; "
            "another program uses this prefix: pick another with ?prefix= in the URL"
        ) from None
    if version > LAYOUT_VERSION:
        raise ConfigError(
            f"the offload data at {where} (prefix {layout.prefix!r}) has layout version "
            f"{version}, written by a newer offload than this one (which knows up to "
            f"{LAYOUT_VERSION}); upgrade offload in every process that uses it, or use "
            "another prefix or database"
        )
    return version


async def warn_if_evicting(client: Redis, where: str) -> None:
    """Log a warning when the server may evict any key once full: jobs would vanish.

    offload's keys carry no expiry, so ``volatile-*`` policies never pick them; only the
    ``allkeys-*`` ones do. Servers that hide ``CONFIG`` (many managed services) are not
    checked."""
    try:
        reply = await client.config_get("maxmemory-policy")
    except ResponseError:
        return
    policy = str(reply.get("maxmemory-policy", ""))
    if policy.startswith("allkeys-"):
        log.warning(
            "Redis deletes any key when full under this maxmemory-policy, queued jobs "
            "included, and nothing reports it: set maxmemory-policy noeviction",
            extra={"action": "store.redis_eviction", "policy": policy, "url": where},
        )
