"""The contract every job store fulfils (DESIGN §4).

All operations are batch-first so that the worker pays one round trip per batch, not per job.
Every change of state is a single compare-and-set inside the store; the ``worker_id`` and
``attempt`` carried by completions and heartbeats fence out a worker whose lease lapsed.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from offload.records import JobError, JobLimits, JobRecord, JobState


@dataclass(slots=True)
class NewJob:
    """A job to insert; the store assigns nothing but may return an existing job for ``key``."""

    id: str
    task: str
    queue: str
    args: str
    kwargs: str
    priority: int
    max_attempts: int
    run_at: float | None = None
    """Absolute time to run at; ``None`` means now by the store's clock."""
    delay: float = 0.0
    """Seconds after the store's ``now`` (used when ``run_at`` is ``None``)."""
    timeout: float | None = None
    key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    limits: JobLimits | None = None
    """Rate and concurrency limits the job is held to; only a ``FlowControl`` store takes
    a job that has them."""
    step: StepLink | None = None
    """The job's place in a workflow; only a ``Workflows`` store takes a job that has one."""


class Takes(enum.StrEnum):
    """What a workflow step receives from the steps before it, put in front of its stored
    arguments by the store when the last of them succeeds."""

    ONE = "one"
    """The result of its one input: a chain's next step."""
    ALL = "all"
    """The list of its inputs' results, in slot order: a chord's callback."""
    NONE = "none"
    """Nothing (an immutable signature): it only waits for its inputs."""
    ERROR = "error"
    """The id of the step that failed: the workflow's ``on_error`` handler, which runs only
    when a step fails and is cancelled when the workflow succeeds."""


@dataclass(frozen=True, slots=True)
class StepLink:
    """A workflow step as the store keeps it (DESIGN §13): a count of inputs still to come,
    and the edges its result travels along. The workflow's id is the id of its last step
    (the callback of a chord, the end of a chain), whose result is the workflow's."""

    workflow: str
    inputs: int
    """How many steps feed it; it is runnable once all of them have succeeded (at once
    when 0). For ``Takes.ERROR``, 1: the failure that lets it run."""
    takes: Takes
    feeds: tuple[tuple[str, int], ...] = ()
    """``(job id, slot)`` of each step its result goes to."""
    on_error: str | None = None
    """The workflow's error handler's job id, released with the failed step's id."""


class OutcomeKind(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY = "retry"
    """Back to queued after ``delay``; the attempt counted."""
    REQUEUE = "requeue"
    """Back to queued now because the worker is shutting down; the attempt is not lost."""
    RELEASE = "release"
    """Claimed ahead but never started: the claim is undone (``attempt`` goes back by one), or
    the job ends cancelled if its cancellation was requested meanwhile."""


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, reported by the worker that holds the lease."""

    id: str
    worker_id: str
    attempt: int
    kind: OutcomeKind
    result: str | None = None
    error: JobError | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a worker asks of ``Store.claim``, as one value: limits the store enforces later
    (rate, concurrency) arrive as new fields with defaults, not as more positional
    arguments on every store and every caller."""

    worker_id: str
    ttl: float
    """Seconds of lease each claimed job gets, on the store's clock."""
    limit: int = 1
    """At most this many jobs."""
    queues: Sequence[str] | None = None
    """The queues to claim from, in no particular order; ``None`` claims from all."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs ``Store.list`` returns; every condition given must hold.

    The time bounds are read from the job's id, a UUIDv7 whose first 48 bits are the
    millisecond the enqueuing client minted it, and not from ``enqueued_at``, which is the
    store's clock at insert: an id range is the newest-first order's own index in every
    store, so a bounded listing reads only the rows inside it, and a bound can never split
    that order (a job outside the bounds is never between two inside them). The two clocks
    differ by the client's skew plus the enqueue's round trip, usually milliseconds. Bounds
    count to the millisecond: a job minted in millisecond ``m`` is enqueued at ``m / 1000``.
    A job with an id that is not a UUIDv7 is placed by whatever its first 48 bits say.
    """

    states: tuple[JobState, ...] = ()
    tasks: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    enqueued_after: float | None = None
    """Only jobs enqueued at or after this time (epoch seconds)."""
    enqueued_before: float | None = None
    """Only jobs enqueued before this time (epoch seconds)."""
    key: str | None = None
    """Only jobs whose idempotency key is this one, of any task (at most one per task)."""

    def __post_init__(self) -> None:
        for name in ("enqueued_after", "enqueued_before"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(
                    f"JobFilter.{name} is {value!r}: give epoch seconds as a finite number, "
                    "or None for no bound"
                )
        if self.key is not None and not isinstance(self.key, str):
            raise ValueError(
                f"JobFilter.key is {self.key!r}: give the idempotency key as a string, "
                "or None for any"
            )


@dataclass(frozen=True, slots=True)
class Page:
    """A page of jobs, newest first; pass ``next_cursor`` back to get the following page."""

    jobs: list[JobRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Activity:
    """Jobs that finished in one bucket of time, by how they ended (``Store.activity``)."""

    start: float
    """The bucket's start, epoch seconds, a multiple of the bucket's length."""
    succeeded: int
    failed: int
    cancelled: int


@dataclass(slots=True)
class ScheduleState:
    """What every scheduler instance must agree on about one schedule, kept in the store."""

    name: str
    paused: bool = False
    fired_until: float | None = None
    """Every slot at or before this time has been enqueued or deliberately passed over;
    ``None`` until a scheduler first saw the schedule."""


@runtime_checkable
class Store(Protocol):
    """A durable home for jobs. Implementations: memory, sqlite, redis."""

    url: str

    async def open(self) -> None:
        """Connect and create or migrate the schema; idempotent."""

    async def close(self) -> None:
        """Release connections; pending writes are completed first."""

    async def now(self) -> float:
        """The store's clock, so that worker clock skew cannot cause early reclaims."""

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Insert jobs atomically, in order; for a ``key`` already on record the existing job
        is returned in that position instead of a new one."""

    async def claim(self, request: ClaimRequest) -> list[JobRecord]:
        """Move up to ``request.limit`` due jobs of ``request.queues`` to running (priority
        desc, then FIFO) in one step, incrementing ``attempt`` and setting the lease.

        The records may leave ``history`` empty: a worker never reads it, and a claim is the
        hot path. ``get`` and ``list`` return it."""

    async def wait_claim(
        self, request: ClaimRequest, timeout: float, stop: asyncio.Event
    ) -> list[JobRecord]:
        """``wait``, then ``claim``: an idle worker's call. Like ``wait`` it may return early
        with nothing (a spurious wake-up). Returns at once with nothing when ``stop`` is or
        becomes set before work arrives (jobs it claimed anyway are returned, for the worker
        to give back).

        A store that can block and claim in one round trip saves the idle worker a round trip
        on every wake-up, which is most of the latency of a job that arrives while workers
        wait (``offload.stores._common.wait_then_claim`` is the two-step version)."""

    async def heartbeat(
        self, leases: Sequence[tuple[str, int]], worker_id: str, ttl: float
    ) -> tuple[set[str], set[str]]:
        """Extend the leases of ``(id, attempt)`` still held by ``worker_id``.

        Returns ``(lost, cancel_requested)``: ids whose lease is no longer ours, and ids whose
        cancellation was requested while running."""

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply finish/fail/retry outcomes; each only if the lease is still the reporter's.

        Returns, per outcome, whether it was applied (False: fenced out)."""

    async def set_progress(
        self, job_id: str, worker_id: str, attempt: int, fraction: float, message: str
    ) -> bool:
        """Store progress if the lease is still the reporter's."""

    async def requeue_expired(self) -> int:
        """Requeue running jobs whose lease lapsed (or fail them when out of attempts)."""

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def activity(self, since: float, bucket: float) -> list[Activity]:
        """Jobs that finished at or after ``since``, counted per state per bucket of
        ``bucket`` seconds by finished_at; buckets with nothing may be left out; oldest
        first. Jobs purged, deleted or retried since they finished are not counted: the
        answer is what the store holds now, not a log of what happened."""

    async def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page: ...

    async def counts(self) -> dict[tuple[str, JobState], int]:
        """Number of jobs per (queue, state)."""

    async def cancel(self, job_id: str) -> JobRecord | None:
        """queued -> cancelled now; running -> cancel requested (the worker stops it).

        Returns the job as it stands afterwards, or ``None`` when it does not exist."""

    async def retry(self, job_id: str) -> JobRecord | None:
        """failed|cancelled -> queued with a fresh attempt budget; raises InvalidTransition
        for other states; ``None`` when it does not exist."""

    async def delete(self, job_id: str) -> JobRecord | None:
        """Delete one finished job (succeeded, failed or cancelled) and free its idempotency
        key; returns the job as it was, or ``None`` when it does not exist. Raises
        InvalidTransition for a queued or running job: only a finished job's state cannot
        move under the call, so no worker ever holds a job that is gone. (The operator
        layer cancels a queued job first.)"""

    async def purge(self, older_than: float) -> int:
        """Delete finished jobs whose ``finished_at`` is before ``older_than``."""

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        """When the earliest queued job becomes due, or ``None`` when nothing is queued."""

    async def wait(self, queues: Sequence[str] | None, timeout: float) -> None:
        """Block until new work may be available or ``timeout`` seconds pass.

        Spurious wake-ups are allowed; missed ones are not (within ``timeout``)."""

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        """The stored state of each named schedule; names never stored are absent."""

    async def advance_schedules(self, marks: dict[str, float]) -> None:
        """Move each schedule's ``fired_until`` forward to the given time (never back),
        creating the state when there is none."""

    async def pause_schedules(self, names: Sequence[str], paused: bool) -> None:
        """Set the pause flag of each named schedule, creating the state when there is none."""


# --- optional capabilities ---------------------------------------------------------------
#
# What only some stores can do is a small Protocol of its own, not a method every store must
# stub out. ``Offload`` checks each one once, when it is built around its store
# (``isinstance`` against the runtime-checkable Protocol), keeps the answer, and takes the
# faster or stronger path where the store offers it; a store without it is never asked.
# The event feed of DESIGN §4 (for the dashboard's live view) is one of them: ChangeFeed.


@runtime_checkable
class BlockingEnqueue(Protocol):
    """What a store offers callers outside the event loop (``task.enqueue_sync``) when it
    can reach its server from any thread: the Redis store's blocking connections.

    A store without it is reached through the loop it was opened on, one thread hop each
    way; with it, a sync endpoint or a script pays only its own round trip."""

    def enqueue_blocking(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """``Store.enqueue``, blocking the calling thread; must not run on an event loop."""


@runtime_checkable
class TransactionalEnqueue(Protocol):
    """What a store on the application's own database offers: the job written on the
    application's connection, inside its open transaction, so that it commits or rolls back
    with the rows that caused it (the PostgreSQL store).

    ``task.options(connection=conn).enqueue(...)`` and ``jobs.enqueue_many(..., connection=
    conn)`` take this path; a store without it refuses them with a ``ConfigError``."""

    async def enqueue_in(self, connection: Any, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """``Store.enqueue`` on ``connection``, in the caller's transaction; the jobs reach
        workers when it commits, and never if it rolls back."""


@runtime_checkable
class ChangeFeed(Protocol):
    """A cheap signal that the jobs may have changed, whoever changed them (any process,
    any machine), so that a live view redraws when something happened instead of reading
    counts and lists on a timer.

    The signal is a token, opaque and comparable: it differs once a write that changed jobs
    has committed. It may change when nothing a reader would see did (a write elsewhere in
    the same database), never the other way round, except where the store says so. Reading
    it costs no write on the hot path: the stores derive it from what they keep anyway."""

    async def changes(self, since: str | None, timeout: float) -> str:
        """The current token, as soon as it differs from ``since`` (at once when ``since``
        is None or already stale), or after ``timeout`` seconds (then equal to ``since``)."""


@runtime_checkable
class CancelSignals(Protocol):
    """A store that tells a worker at once that a job it runs was asked to stop, instead of
    at its next heartbeat (a third of the lease, 10 s by default): ``cancel`` of a running
    job reaches the worker that holds it within about a second, without a poll per job.

    Reports are a fast path, not the record: the ``cancel_requested`` flag the heartbeat
    returns stays the truth, so a report lost (one made before the worker's first call, or
    while the store's connection was down) still arrives with the next heartbeat. A store
    without it is never asked; its workers learn of cancellations from the heartbeat alone."""

    async def cancel_requests(self, worker_id: str, timeout: float) -> set[str]:
        """Ids of jobs running under ``worker_id`` whose cancellation was asked for, as soon
        as there is one not reported to this worker before (at once when there is one
        already), or an empty set after ``timeout`` seconds. Each request is reported once;
        requests made after the worker's first call are never missed while the store is
        reachable, those made before may be (the heartbeat has them)."""


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """How much of a limit is in use now: jobs running under a concurrency key, or tokens
    left in a rate key's bucket (as of its last refill), and jobs waiting on it."""

    key: str
    running: int | None = None
    tokens: float | None = None
    waiting: int = 0


@runtime_checkable
class FlowControl(Protocol):
    """A store that enforces jobs' ``limits`` (``NewJob.limits``) in ``claim``, for every
    worker at once: a job whose concurrency key has as many jobs running as its limit, or
    whose rate key's bucket has no token, is not claimed; it stays queued with its
    ``waiting_reason`` set, uses no attempt, and is claimable again when a job of that key
    stops running, or when the next token is due (its ``run_at`` moves there, so a waiting
    worker wakes by the due time, not by polling). Running jobs are counted from the jobs
    themselves, so a worker that dies holds its slots until its leases lapse, no longer.

    A store without it refuses jobs that carry limits (``ConfigError`` when such a task is
    registered), rather than run them unlimited."""

    async def limit_usage(self, keys: Sequence[str]) -> list[LimitUsage]:
        """The usage of each key (concurrency and rate keys alike), for metrics."""


@runtime_checkable
class Workflows(Protocol):
    """A store that keeps workflows (DESIGN §13): jobs with a ``step`` are enqueued with the
    rest of their graph in one atomic write, a step with inputs waits queued (its
    ``waiting_reason`` ``inputs``, out of every claim's reach) until its inputs have
    succeeded, and then the store, in the same atomic step as the success of the last
    of them, puts their results in front of its arguments (``Takes``) and makes it
    runnable. No process waits for anything, so a crash anywhere loses no edge.

    - A step that ends failed (out of attempts, a lapsed last lease) or cancelled cancels
      every step after it that has not run, with an error naming it (type
      ``WorkflowStepFailed`` or ``WorkflowStepCancelled``); a failure releases the
      ``on_error`` handler with the failed step's id as its first argument, once.
    - The workflow's last step succeeding cancels the handler (it is not needed).
    - ``cancel`` of the workflow's id cancels every step that has not finished (running
      ones get their cancellation requested); ``cancel`` of another step cancels it and
      what comes after it.
    - ``retry`` of any failed or cancelled step of a workflow resumes the whole workflow:
      each failed or cancelled step goes back to queued, runnable if its inputs are in,
      waiting for them if not; steps that succeeded keep their results.
    - A workflow whose last step has a ``key`` on record adds nothing: every one of its
      positions in the call returns that job.

    A store without it refuses workflows (``ConfigError``) rather than run their steps
    unordered."""

    async def steps(self, workflow: str) -> list[JobRecord]:
        """Every job of the workflow, the last step included, in the order enqueued."""


@runtime_checkable
class QueueCaps(Protocol):
    """A store that refuses, inside ``enqueue`` and atomically with it, jobs past their
    backlog limits (``JobLimits.max_queued`` for the task, ``queue_max`` for the queue):
    ``enqueue`` raises ``QueueFull`` and stores nothing of the call. A job whose key finds
    a job on record is not counted (it adds nothing). A store without it refuses to open
    with such limits rather than ignore them."""

    async def queued_depths(self, tasks: Sequence[str], queues: Sequence[str]) -> dict[str, int]:
        """Queued jobs per task (of those enqueued with a limit) and per queue, keyed
        ``task:<name>`` and ``queue:<name>``, for metrics."""


@runtime_checkable
class Migrations(Protocol):
    """A store whose layout an operator may bring up to date on purpose, before any process
    uses it (``offload migrate``): a schema shared by many services, or a database user
    for the workers that may not create tables. A store without it migrates when opened."""

    async def migrate(self) -> tuple[int, list[int]]:
        """Apply the missing layout steps, whatever the store's own setting for doing so on
        open; returns the layout version now and the steps this call applied."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker process as the registry holds it (``WorkerRegistry``): what an operator
    needs to find it (host, pid), what it serves, and when it last showed it was alive."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    """The queues it claims from; empty: every queue."""
    concurrency: int
    started_at: float
    running: int = 0
    """Jobs in flight at the last heartbeat."""
    seen_at: float = 0.0
    """The last heartbeat, by the store's clock (set by the store; what a caller gives is
    ignored)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(
                f"WorkerInfo.id is {self.id!r}: give the worker's id, a non-empty string"
            )
        if not isinstance(self.host, str):
            raise ValueError(f"WorkerInfo.host is {self.host!r}: give the host name as a string")
        for name in ("pid", "concurrency", "running"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"WorkerInfo.{name} is {value!r}: give a whole number, 0 or more")
        if not isinstance(self.queues, tuple) or not all(isinstance(q, str) for q in self.queues):
            raise ValueError(
                f"WorkerInfo.queues is {self.queues!r}: give a tuple of queue names, "
                "or () for every queue"
            )
        for name in ("started_at", "seen_at"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"WorkerInfo.{name} is {value!r}: give epoch seconds")


def check_worker_ttl(ttl: float) -> float:
    """``ttl`` of ``WorkerRegistry.record_worker`` as seconds, or a clear error: a worker
    recorded with no time to live would vanish before anyone could read it."""
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not ttl > 0
        or not math.isfinite(ttl)
    ):
        raise ValueError(
            f"ttl is {ttl!r}: give the seconds a worker counts as alive after this heartbeat, "
            "more than 0 (the worker passes its lease)"
        )
    return float(ttl)


@runtime_checkable
class WorkerRegistry(Protocol):
    """What a store offers to list the workers alive now, idle ones included (the
    dashboard's Workers, ``offload info``). Each worker writes its entry once per heartbeat
    tick, off the jobs' path; an entry lapses ``ttl`` after its last write, so a worker
    that was killed disappears within one lease without anyone removing it.

    A store without it is never asked: the dashboard then derives workers from the running
    jobs' ``worker_id``, which cannot show an idle worker."""

    async def record_worker(self, info: WorkerInfo, ttl: float) -> None:
        """The worker is alive: store info with seen_at = the store's now; it counts as alive
        until now + ttl."""

    async def forget_worker(self, worker_id: str) -> None:
        """The worker stopped cleanly."""

    async def workers(self) -> list[WorkerInfo]:
        """Workers alive now (seen within their ttl), by id; a store may drop expired entries
        as it reads."""
