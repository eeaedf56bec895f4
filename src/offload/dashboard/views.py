"""What each dashboard page shows, read from the store through the store contract and
``offload.admin``: no store-specific code, no HTML (that is the templates' part).

The page functions return plain dataclasses so that a template only lays values out, and a
test can check the figures without parsing HTML.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from offload import admin
from offload.correlation import REQUEST_ID
from offload.records import JobError, JobRecord, JobState
from offload.stores.base import (
    Activity,
    JobFilter,
    Page,
    WorkerInfo,
    WorkerRegistry,
    Workflows,
)

if TYPE_CHECKING:
    from offload.app import Offload

__all__ = [
    "CHART_BUCKETS",
    "Chart",
    "JobDetail",
    "Overview",
    "ScheduleRow",
    "Worker",
    "format_time",
    "job_detail",
    "overview",
    "schedule_rows",
]

# The overview charts: the last hour, a bar a minute.
CHART_SECONDS = 3600
CHART_BUCKET = 60
CHART_BUCKETS = CHART_SECONDS // CHART_BUCKET
CHART_WIDTH = 600
CHART_HEIGHT = 120
# Running jobs read to show what each worker is doing; more than a screenful is summarised.
RUNNING_SHOWN = 500
STATES = tuple(JobState)


def format_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    delta = now - ts
    if abs(delta) < 1:
        return "now"
    future = delta < 0
    delta = abs(delta)
    if delta < 120:
        text = f"{delta:.0f} s"
    elif delta < 7200:
        text = f"{delta / 60:.0f} min"
    elif delta < 172800:
        text = f"{delta / 3600:.0f} h"
    else:
        text = f"{delta / 86400:.0f} d"
    return f"in {text}" if future else f"{text} ago"


def _seen_ago(ts: float, now: float) -> str:
    """A heartbeat's age, always in the past: "0 s ago" rather than "now", since a beat a
    third of a lease apart is what a reader compares."""
    delta = max(0.0, now - ts)
    return f"{delta:.0f} s ago" if delta < 120 else format_ago(ts, now)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


# --- overview -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart as SVG geometry, drawn by the template without script."""

    title: str
    peak: str
    bars: dict[str, list[Bar]]
    """Series name (a CSS class) → its bars, stacked in insertion order."""
    total: str


@dataclass(frozen=True, slots=True)
class Worker:
    id: str
    jobs: list[JobRecord]
    lease_until: float | None
    """The latest lease this worker renewed: a worker's heartbeat moves it forward, so a
    lease in the past means a worker that stopped answering."""
    info: WorkerInfo | None = None
    """The store's registry entry, where the store keeps one (``WorkerRegistry``)."""
    heartbeat: str = ""
    """The last heartbeat, as "N s ago" by the store's clock."""

    @property
    def queues(self) -> str:
        if self.info is None or not self.info.queues:
            return "all"
        return ", ".join(self.info.queues)


@dataclass(slots=True)
class Overview:
    now: float
    queues: list[str]
    counts: dict[tuple[str, str], int]
    totals: dict[str, int]
    throughput: Chart
    failure_rate: Chart
    workers: list[Worker]
    running_more: bool = False
    registry: bool = False
    """Workers come from the store's registry (idle ones too), not from running jobs."""


def _bucket_series(activity: list[Activity], start: float) -> list[Activity]:
    by_start = {a.start: a for a in activity}
    return [
        by_start.get(start + i * CHART_BUCKET, Activity(start + i * CHART_BUCKET, 0, 0, 0))
        for i in range(CHART_BUCKETS)
    ]


def _charts(activity: list[Activity], now: float) -> tuple[Chart, Chart]:
    start = (math.floor(now / CHART_BUCKET) - CHART_BUCKETS + 1) * CHART_BUCKET
    series = _bucket_series(activity, start)
    width = CHART_WIDTH / CHART_BUCKETS
    peak = max((a.succeeded + a.failed for a in series), default=0)
    scale = CHART_HEIGHT / peak if peak else 0.0
    succeeded: list[Bar] = []
    failed: list[Bar] = []
    rate: list[Bar] = []
    for i, a in enumerate(series):
        x = i * width
        label = datetime.fromtimestamp(a.start, UTC).strftime("%H:%M")
        h_ok = a.succeeded * scale
        h_bad = a.failed * scale
        succeeded.append(
            Bar(x, width - 1, CHART_HEIGHT - h_ok, h_ok, f"{label}: {a.succeeded} succeeded")
        )
        failed.append(
            Bar(x, width - 1, CHART_HEIGHT - h_ok - h_bad, h_bad, f"{label}: {a.failed} failed")
        )
        done = a.succeeded + a.failed
        fraction = a.failed / done if done else 0.0
        h_rate = fraction * CHART_HEIGHT
        rate.append(
            Bar(x, width - 1, CHART_HEIGHT - h_rate, h_rate, f"{label}: {fraction:.0%} failed")
        )
    total_ok = sum(a.succeeded for a in series)
    total_bad = sum(a.failed for a in series)
    done = total_ok + total_bad
    throughput = Chart(
        "Finished per minute, last hour",
        f"peak {peak}/min",
        {"succeeded": succeeded, "failed": failed},
        f"{total_ok} succeeded, {total_bad} failed ({done / CHART_SECONDS:.2f} jobs/s)",
    )
    failure = Chart(
        "Failure rate per minute, last hour",
        "100 %",
        {"failed": rate},
        f"{total_bad / done:.1%} of {done} failed" if done else "nothing finished",
    )
    return throughput, failure


# Minutes this far back are read again on every refresh: a job finishing as a minute closes
# may be stored a moment later, by another process's clock.
_SETTLE = 2 * CHART_BUCKET


class ActivityCache:
    """The chart's figures, kept between refreshes.

    Counting an hour of finished jobs reads every one of them (a store that finishes 1,000
    jobs a second has 3.6 million in the hour). A minute that has closed does not change, so
    after the first read only the last two minutes are read again, and those at most every
    ``RECENT_EVERY`` seconds: a chart of minutes needs no fresher figures, while the counts
    and workers beside it refresh every time. A retry or purge of an older job shows once
    its minute leaves the chart, an hour at most."""

    RECENT_EVERY = 10.0

    def __init__(self) -> None:
        self._closed: dict[float, Activity] = {}
        self._until: float | None = None
        """Every bucket before this start is in ``_closed``."""
        self._recent: list[Activity] = []
        self._read_at = -math.inf

    async def read(self, store: Any, now: float) -> list[Activity]:
        hour_ago = now - CHART_SECONDS
        if self._until is not None and self._until >= hour_ago:
            if now - self._read_at < self.RECENT_EVERY:
                return self._merged()
            since = self._until
        else:
            since = hour_ago
        fresh: list[Activity] = await store.activity(since, CHART_BUCKET)
        self._read_at = now
        cut = (math.floor(now / CHART_BUCKET) * CHART_BUCKET) - _SETTLE
        for bucket in fresh:
            if bucket.start < cut:
                self._closed[bucket.start] = bucket
        self._closed = {k: v for k, v in self._closed.items() if k >= hour_ago - CHART_BUCKET}
        self._until = max(cut, since)
        self._recent = [b for b in fresh if b.start >= self._until]
        return self._merged()

    def _merged(self) -> list[Activity]:
        assert self._until is not None
        until = self._until
        closed = [b for b in self._closed.values() if b.start < until]
        return sorted(closed + self._recent, key=lambda b: b.start)


async def overview(jobs: Offload, cache: ActivityCache | None = None) -> Overview:
    store = jobs.store
    now = await store.now()
    counts = await store.counts()
    activity = await (cache or ActivityCache()).read(store, now)
    running = await store.list(JobFilter(states=(JobState.RUNNING,)), RUNNING_SHOWN)
    by_worker: dict[str, list[JobRecord]] = defaultdict(list)
    for record in running.jobs:
        by_worker[record.worker_id or "?"].append(record)
    registry = isinstance(store, WorkerRegistry)
    entries = await store.workers() if isinstance(store, WorkerRegistry) else []
    infos = {info.id: info for info in entries}
    # With a registry, every live worker; a running job whose worker is not (or no longer)
    # listed still shows, under its worker id, so that no running job is hidden.
    ids = sorted(set(infos) | set(by_worker))
    workers = []
    for worker_id in ids:
        records = sorted(by_worker.get(worker_id, []), key=lambda r: r.started_at or 0.0)
        info = infos.get(worker_id)
        workers.append(
            Worker(
                worker_id,
                records,
                max((r.lease_until for r in records if r.lease_until is not None), default=None),
                info,
                "" if info is None else _seen_ago(info.seen_at, now),
            )
        )
    queues = sorted({q for q, _ in counts} | set(jobs.queues or ()))
    totals = {s.value: sum(n for (_, st), n in counts.items() if st is s) for s in STATES}
    throughput, failure = _charts(activity, now)
    return Overview(
        now=now,
        queues=queues,
        counts={(q, s.value): n for (q, s), n in counts.items()},
        totals=totals,
        throughput=throughput,
        failure_rate=failure,
        workers=workers,
        running_more=running.next_cursor is not None,
        registry=registry,
    )


# --- one job --------------------------------------------------------------------------------


def pretty(value: Any) -> str:
    """JSON for reading: indented, non-ASCII kept, anything else as its text."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True, slots=True)
class JobDetail:
    view: admin.JobView
    now: float
    args: str
    kwargs: str
    result: str | None
    meta: str
    request_id: str | None
    waited: str
    ran: str
    log_url: str | None
    workflow: str | None = None
    """The id of the workflow the job is a step of (its last step's id)."""
    steps: tuple[ListedJob, ...] = ()
    """Every step, on the page of the workflow's last step."""

    @property
    def record(self) -> JobRecord:
        return self.view.record

    @property
    def live(self) -> bool:
        """Still moving: the page refreshes itself while this holds."""
        return not self.record.state.finished

    @property
    def attempts(self) -> list[JobError]:
        """The errors to show, newest first, each with its attempt: the history, and the
        job's last error ahead of it where the history does not end in it (a row from before
        the history was kept, or a cancellation's error, which is not an attempt's)."""
        shown = list(reversed(self.view.history))
        error, attempt = self.view.error, self.record.attempt
        if error is not None:
            newest = shown[0] if shown else None
            if newest is None or (newest.attempt, newest.type, newest.message) != (
                attempt,
                error.type,
                error.message,
            ):
                shown.insert(0, JobError(error.type, error.message, error.traceback, attempt))
        return shown


async def job_detail(jobs: Offload, job_id: str, log_url: str | None) -> JobDetail:
    record = await admin.get_job(jobs.store, job_id)
    task = jobs.tasks.get(record.task)
    shown = admin.view(record, None if task is None else task.codec.decode_result)
    start = record.started_at
    request_id = shown.meta.get(REQUEST_ID)
    workflow = record.meta.get("workflow")
    store = jobs.store
    steps: list[JobRecord] = []
    if workflow == record.id and isinstance(store, Workflows):
        steps = await store.steps(record.id)
    return JobDetail(
        view=shown,
        now=await jobs.store.now(),
        args=pretty(shown.args),
        kwargs=pretty(shown.kwargs),
        result=None if record.result is None else pretty(shown.result),
        meta=pretty(shown.meta),
        request_id=None if request_id is None else str(request_id),
        waited=format_duration(None if start is None else max(0.0, start - record.run_at)),
        ran=format_duration(
            None if start is None or record.finished_at is None else record.finished_at - start
        ),
        log_url=None
        if log_url is None
        else log_url.format(job_id=record.id, request_id=request_id or ""),
        workflow=workflow if isinstance(workflow, str) else None,
        steps=tuple(_listed(step) for step in steps),
    )


# --- lists ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedJob:
    record: JobRecord
    error: str


def listed(page: Page) -> list[ListedJob]:
    return [_listed(record) for record in page.jobs]


def _listed(record: JobRecord) -> ListedJob:
    error = admin.shown_error(record.error)
    return ListedJob(record, "" if error is None else f"{error.type}: {error.message}"[:200])


# --- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    status: admin.ScheduleStatus
    last: JobRecord | None


# How far back a schedule's last run is looked for among its task's jobs.
_LAST_RUN_SCAN = 50


async def schedule_rows(jobs: Offload) -> list[ScheduleRow]:
    rows = []
    for status in await admin.statuses(jobs):
        schedule = status.schedule
        prefix = f"schedule:{schedule.name}:"
        page = await jobs.store.list(JobFilter(tasks=(schedule.task.name,)), _LAST_RUN_SCAN)
        last = next((r for r in page.jobs if r.key and r.key.startswith(prefix)), None)
        rows.append(ScheduleRow(status, last))
    return rows
