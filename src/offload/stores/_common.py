"""Pieces of store logic that every backend shares, kept pure so each store stays a thin
adapter around its own atomicity primitive."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from offload.records import JobError, JobRecord, JobState, Progress
from offload.stores.base import (
    Activity,
    ClaimRequest,
    JobFilter,
    NewJob,
    Outcome,
    OutcomeKind,
    Store,
)

LEASE_EXPIRED = "LeaseExpired"

# How late a claim may take a job held for its token and still start it on that token
# (flow control, each store's admit): half a token's time, and at least 10 ms. A claim that
# comes later weighs it again like a new job, so that workers that stopped for a while do
# not start every job whose time came meanwhile at once: the most starts in any second
# stay within the rate and the burst, plus this much of the rate. Half, not a whole token:
# a job starts a little after its claim (a worker busy with other work, a fresh process's
# first job), and a whole token's lateness plus that delay put one start more in a second
# than the rate and the burst allow.
CATCH_UP_MIN = 0.01
CATCH_UP_TOKENS = 0.5


def keeps_token(waited: str | None, due: float, now: float, rate: float) -> bool:
    """Whether a claimed job held for a token starts on it (see ``CATCH_UP_MIN``)."""
    return waited == "rate_limit" and now - due <= max(CATCH_UP_TOKENS / rate, CATCH_UP_MIN)


def lease_expired_error(worker_id: str | None) -> JobError:
    return JobError(
        LEASE_EXPIRED,
        f"worker {worker_id} stopped renewing the lease (crashed or was killed) "
        "and no attempts are left",
    )


def lease_requeued_error(worker_id: str | None) -> JobError:
    return JobError(LEASE_EXPIRED, f"worker {worker_id} stopped renewing the lease")


def mask_url(url: str) -> str:
    """The URL with any password replaced, for messages, logs and ``offload info`` output
    that may be pasted into a ticket. An unparseable URL is not shown at all: it may hold a
    password where the parser could not find it."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return "<unparseable URL>"
    if password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def not_deletable(job_id: str, state: JobState) -> str:
    """The one wording of a refused ``Store.delete``, with the fix."""
    hint = "cancel it first" if state is JobState.QUEUED else "cancel it and let it stop first"
    return f"job {job_id} is {state.value}; only finished jobs can be deleted ({hint})"


def apply_outcome(job: JobRecord, outcome: Outcome, now: float) -> None:
    """Mutate ``job`` as the outcome says; the caller has already checked the fence."""
    kind = outcome.kind
    job.lease_until = None
    if kind is OutcomeKind.RELEASE and job.cancel_requested:
        kind = OutcomeKind.CANCELLED
    job.cancel_requested = False
    if kind is OutcomeKind.SUCCEEDED:
        job.state = JobState.SUCCEEDED
        job.result = outcome.result
        job.error = None
        job.finished_at = now
    elif kind is OutcomeKind.FAILED:
        job.state = JobState.FAILED
        job.error = outcome.error
        job.finished_at = now
        if outcome.error is not None:
            job.add_history(outcome.error, outcome.attempt)
    elif kind is OutcomeKind.CANCELLED:
        job.state = JobState.CANCELLED
        job.error = outcome.error
        job.finished_at = now
    elif kind is OutcomeKind.RETRY:
        job.state = JobState.QUEUED
        job.error = outcome.error
        job.run_at = now + outcome.delay
        if outcome.error is not None:
            job.add_history(outcome.error, outcome.attempt)
    elif kind is OutcomeKind.RELEASE:
        job.state = JobState.QUEUED
        job.run_at = now
        job.attempt -= 1
        if job.attempt == 0:
            job.started_at = None
            job.worker_id = None
    else:  # REQUEUE: shutdown must not cost the job its last attempt
        job.state = JobState.QUEUED
        job.run_at = now
        job.max_attempts = max(job.max_attempts, job.attempt + 1)


def fenced(job: JobRecord | None, worker_id: str, attempt: int) -> bool:
    return (
        job is not None
        and job.state is JobState.RUNNING
        and job.worker_id == worker_id
        and job.attempt == attempt
    )


def matches(job: JobRecord, flt: JobFilter) -> bool:
    low, high = id_bounds(flt)
    return (
        (not flt.states or job.state in flt.states)
        and (not flt.tasks or job.task in flt.tasks)
        and (not flt.queues or job.queue in flt.queues)
        and (flt.key is None or job.key == flt.key)
        and (low is None or job.id >= low)
        and (high is None or job.id < high)
    )


def id_floor(at: float) -> str:
    """The lowest UUIDv7 of the first millisecond at or after ``at``: every id minted at or
    after ``at`` sorts at or above it, every one minted before sorts below (see
    ``JobFilter``). Rounded to the microsecond first, so that a time read back from a
    millisecond (``1.001``) is that millisecond and not the next one."""
    ms = min(max(math.ceil(round(at * 1000, 3)), 0), _MAX_MS)
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:]}-0000-0000-000000000000"


_MAX_MS = (1 << 48) - 1


def id_bounds(flt: JobFilter) -> tuple[str | None, str | None]:
    """The filter's time bounds as ids: jobs from ``low`` (inclusive) to ``high`` (not)."""
    low = None if flt.enqueued_after is None else id_floor(flt.enqueued_after)
    high = None if flt.enqueued_before is None else id_floor(flt.enqueued_before)
    return low, high


def upper_id(flt: JobFilter, cursor: str | None) -> str | None:
    """The id every listed job must sort below: the page cursor's or the filter's upper
    bound, whichever is lower."""
    after = decode_cursor(cursor) if cursor else None
    high = id_bounds(flt)[1]
    if after is None or high is None:
        return after or high
    return min(after, high)


def check_activity(since: float, bucket: float) -> None:
    """Refuse what ``Store.activity`` cannot bucket, naming the argument."""
    for name, value in (("since", since), ("bucket", bucket)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"activity {name}={value!r}: give seconds as a number")
    if not math.isfinite(since):
        raise ValueError(f"activity since={since!r}: give epoch seconds as a finite number")
    if not (math.isfinite(bucket) and bucket > 0):
        raise ValueError(f"activity bucket={bucket!r}: give a bucket length above 0 seconds")


def tally_activity(rows: Iterable[tuple[float, str, int]], bucket: float) -> list[Activity]:
    """Buckets oldest first from ``(bucket number, state, count)`` rows, in any order and
    with a state more than once; the bucket number is ``floor(finished_at / bucket)``."""
    per: dict[float, dict[str, int]] = {}
    for number, state, n in rows:
        counts = per.setdefault(float(number), {})
        counts[state] = counts.get(state, 0) + int(n)
    return [
        Activity(
            number * bucket,
            counts.get("succeeded", 0),
            counts.get("failed", 0),
            counts.get("cancelled", 0),
        )
        for number, counts in sorted(per.items())
    ]


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        decoded = base64.urlsafe_b64decode(padded.encode()).decode()
        uuid.UUID(decoded)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"invalid page cursor {cursor!r}: pass the next_cursor of the previous page"
        ) from exc
    return decoded


def dump_error(error: JobError | None) -> str | None:
    return None if error is None else json.dumps(error.to_json())


def load_error(raw: str | None) -> JobError | None:
    return None if raw is None else JobError.from_json(json.loads(raw))


HISTORY_KINDS = frozenset({OutcomeKind.RETRY, OutcomeKind.FAILED})
"""The outcomes whose error joins the job's history: the task's own failures. A
cancellation's error is the operator's doing, not an attempt's."""


def history_entry(error: JobError, attempt: int) -> str:
    """One ``JobRecord.history`` entry as JSON, for a store that appends it in its own
    query or script."""
    return json.dumps(error.for_history(attempt).to_json())


def load_history(raw: str | list[Any] | None) -> list[JobError]:
    """A stored history, JSON text or already decoded; a row from before it was kept has
    none (NULL or absent)."""
    if raw is None or raw == "":
        return []
    entries = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(entries, list):  # an empty Lua table encodes as {}
        return []
    return [e for e in (JobError.from_json(d) for d in entries) if e is not None]


def dump_progress(progress: Progress | None) -> str | None:
    if progress is None:
        return None
    return json.dumps({"fraction": progress.fraction, "message": progress.message})


def load_progress(raw: str | None) -> Progress | None:
    if raw is None:
        return None
    data: dict[str, Any] = json.loads(raw)
    return Progress(float(data["fraction"]), str(data.get("message", "")))


def queued_record(new: NewJob, now: float) -> JobRecord:
    """The row a fresh enqueue creates; ``now`` is the store's clock."""
    # The required fields by position: a batch builds one per job, and keywords cost half
    # again as much (id, task, queue, args, kwargs, state, priority, attempt, max_attempts,
    # run_at, enqueued_at).
    return JobRecord(
        new.id,
        new.task,
        new.queue,
        new.args,
        new.kwargs,
        JobState.QUEUED,
        new.priority,
        0,
        new.max_attempts,
        new.run_at if new.run_at is not None else now + new.delay,
        now,
        timeout=new.timeout,
        key=new.key,
        meta=dict(new.meta),
    )


def sort_key(job: JobRecord) -> tuple[int, float, str]:
    """Claim order: higher priority first, then earliest due, then enqueue order."""
    return (-job.priority, job.run_at, job.id)


def queue_list(queues: Sequence[str] | None) -> list[str] | None:
    return None if queues is None else list(dict.fromkeys(queues))


async def wait_then_claim(
    store: Store, request: ClaimRequest, timeout: float, stop: asyncio.Event
) -> list[JobRecord]:
    """``Store.wait_claim`` in two steps, for stores that cannot block and claim at once."""
    if not stop.is_set():
        waiter = asyncio.ensure_future(store.wait(request.queues, timeout))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
    if stop.is_set():
        return []
    return await store.claim(request)


async def poll_changes(
    read: Callable[[], Awaitable[str]], since: str | None, timeout: float, interval: float
) -> str:
    """``ChangeFeed.changes`` over a token that costs the store next to nothing to read (a
    counter it keeps anyway): read it every ``interval`` until it moves or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    while True:
        token = await read()
        remaining = deadline - loop.time()
        if token != since or remaining <= 0:
            return token
        await asyncio.sleep(min(interval, remaining))
