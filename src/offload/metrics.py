"""Prometheus metrics for jobs and workers (optional extra: ``pip install 'offload[prometheus]'``).

``install(jobs)`` attaches a :class:`PrometheusObserver` to an app; the worker serves it with
``offload worker --metrics-port N`` (loopback by default) and a web app can mount
``make_asgi_app(jobs)``. All durations are seconds. Labels are the task name and queue
(passed through the redactor like everything else offload writes).

Queue depth is read from ``store.counts()`` when scraped, at most once per
``depth_cache`` seconds, so any number of scrapers cost the store one query per interval.
``offload_workers`` counts the workers running in the scraped process (sum it over targets
for a fleet): the stores keep no registry of live workers to count from. It is read when
scraped, from the workers this observer saw start and the app's own list (``jobs.workers``),
so a worker that started before the observer was attached is counted too.

Counters count what happens after the observer is attached: call ``install(jobs)`` where the
app is built (``serve`` and ``make_asgi_app`` do) for them to count from the start of the
process. ``render`` attaches it on first use otherwise, and logs a warning if the app was
already open by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Final

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        start_http_server,
    )
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "offload.metrics needs prometheus-client: pip install 'offload[prometheus]'"
    ) from exc

from offload.jobs import JobState
from offload.observers import JobObserver
from offload.redaction import redact_text
from offload.stores.base import FlowControl, LimitUsage

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from offload.app import Offload
    from offload.jobs import JobRecord
    from offload.stores.base import NewJob

__all__ = ["PrometheusObserver", "install", "make_asgi_app", "render", "serve"]

log = logging.getLogger("offload.metrics")

# From a 5 ms email render to a 10-minute report; Prometheus wants seconds.
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    600,
)
# Lag from a millisecond (an idle worker) to an hour (a backlog someone should hear about).
LAG_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
# Scrapes are every 15-60 s typically; a few seconds of staleness is invisible there and
# keeps several scrapers (or a scraper and a dashboard) from multiplying count queries.
DEPTH_CACHE: Final = 5.0
# A scrape must not hang on a store outage: serve the last known depth after this.
DEPTH_TIMEOUT: Final = 2.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class PrometheusObserver(JobObserver):
    """Counts, times and gauges jobs; attach with :func:`install`."""

    def __init__(
        self,
        jobs: Offload,
        registry: CollectorRegistry | None = None,
        depth_cache: float = DEPTH_CACHE,
    ) -> None:
        self.jobs = jobs
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("task", "queue")
        reg = self.registry
        self.enqueued_total = Counter(
            "offload_jobs_enqueued", "Jobs stored by enqueue", labels, registry=reg
        )
        self.started_total = Counter(
            "offload_jobs_started", "Attempts started", labels, registry=reg
        )
        self.succeeded_total = Counter(
            "offload_jobs_succeeded", "Jobs that succeeded", labels, registry=reg
        )
        self.failed_total = Counter(
            "offload_jobs_failed", "Jobs that failed for good", labels, registry=reg
        )
        self.retried_total = Counter(
            "offload_jobs_retried",
            "Attempts that failed and were rescheduled",
            labels,
            registry=reg,
        )
        self.cancelled_total = Counter(
            "offload_jobs_cancelled", "Jobs cancelled while running", labels, registry=reg
        )
        self.process_deaths_total = Counter(
            "offload_process_deaths",
            "cpu_bound pool processes that died running a job (crash, os._exit, OOM kill)",
            labels,
            registry=reg,
        )
        self.duration = Histogram(
            "offload_job_duration_seconds",
            "Run time of one attempt",
            labels,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.lag = Histogram(
            "offload_job_queue_lag_seconds",
            "From when a job was due (run_at, the enqueue time unless delayed) to its start",
            labels,
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.workers = Gauge("offload_workers", "Workers running in this process", registry=reg)
        self._workers: set[str] = set()
        self.workers.set_function(self._live_workers)
        self.depth_cache = depth_cache
        self._depth: dict[tuple[str, JobState], int] = {}
        self._usage: list[LimitUsage] = []
        self._depth_at = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}
        reg.register(_DepthCollector(self))

    def _label(self, task: str, queue: str) -> tuple[str, str]:
        key = (task, queue)
        label = self._labels.get(key)
        if label is None:
            label = self._labels[key] = (redact_text(task), redact_text(queue))
        return label

    # --- observer hooks ------------------------------------------------------------------

    def enqueued(
        self,
        jobs: Sequence[NewJob],
        records: Sequence[JobRecord] | None,
        error: BaseException | None = None,
    ) -> None:
        if records is None:
            return
        for new, record in zip(jobs, records, strict=True):
            if new.id == record.id:  # not an existing job returned for its key
                self.enqueued_total.labels(*self._label(record.task, record.queue)).inc()

    def started(self, record: JobRecord) -> None:
        label = self._label(record.task, record.queue)
        self.started_total.labels(*label).inc()
        if record.started_at is not None:
            self.lag.labels(*label).observe(max(record.started_at - record.run_at, 0.0))

    def finished(self, record: JobRecord, outcome: str, duration: float) -> None:
        label = self._label(record.task, record.queue)
        self.duration.labels(*label).observe(duration)
        counter = {
            "succeeded": self.succeeded_total,
            "failed": self.failed_total,
            "retry": self.retried_total,
            "cancelled": self.cancelled_total,
        }.get(outcome)
        if counter is not None:
            counter.labels(*label).inc()

    def process_died(self, record: JobRecord, exitcode: int) -> None:
        self.process_deaths_total.labels(*self._label(record.task, record.queue)).inc()

    def worker_started(self, worker_id: str) -> None:
        self._workers.add(worker_id)
        self._loop = asyncio.get_running_loop()

    def worker_stopped(self, worker_id: str) -> None:
        self._workers.discard(worker_id)

    def _live_workers(self) -> int:
        # By id, so a worker both seen here and listed by the app counts once. Called on the
        # scrape's thread: the union is one C call under the GIL, so neither set can change
        # while it is taken.
        return len(self._workers.union(self.jobs.workers))

    # --- queue depth ---------------------------------------------------------------------

    async def refresh_depth(self) -> None:
        """Re-read the counts from the store unless the cached ones are recent enough."""
        if time.monotonic() - self._depth_at < self.depth_cache:
            return
        await self.jobs.open()
        self._depth = await self.jobs.store.counts()
        store = self.jobs.store
        keys = limit_keys(self.jobs)
        if keys and isinstance(store, FlowControl):
            self._usage = await store.limit_usage(keys)
        self._depth_at = time.monotonic()
        self._loop = asyncio.get_running_loop()

    def depth(self) -> dict[tuple[str, JobState], int]:
        """The counts, refreshed through the app's event loop when called from another thread
        (the worker's metrics server); on the loop itself (the ASGI app refreshed them
        already) or on a timeout, the cached ones."""
        loop = self._loop
        on_loop = False
        with contextlib.suppress(RuntimeError):
            on_loop = asyncio.get_running_loop() is not None
        if loop is not None and not on_loop and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.refresh_depth(), loop)
            with contextlib.suppress(Exception):
                future.result(DEPTH_TIMEOUT)
        return self._depth

    def usage(self) -> list[LimitUsage]:
        """The limits' usage as of the last ``depth()`` (read in the same refresh)."""
        return self._usage


def limit_keys(jobs: Offload) -> list[str]:
    """The limit keys known without a job's arguments: each limited task's own (or the
    shared name it gives). Keys made from arguments (per user, per tenant) are too many to
    export as labels; ``limit_usage`` answers for them when asked."""
    keys: set[str] = set()
    for name, task in jobs.tasks.items():
        flow = task.config.flow
        if flow is None:
            continue
        for limited, key in ((flow.rate, flow.rate_key), (flow.concurrency, flow.concurrency_key)):
            if limited is None:
                continue
            if key is None:
                keys.add(name)
            elif isinstance(key, str):
                keys.add(f"={key}")
    return sorted(keys)


class _DepthCollector(Collector):
    def __init__(self, observer: PrometheusObserver) -> None:
        self.observer = observer

    def describe(self) -> list[Metric]:
        return []  # counted at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        counts = self.observer.depth()
        family = GaugeMetricFamily(
            "offload_queue_depth", "Jobs in the store by queue and state", labels=["queue", "state"]
        )
        queues = sorted({queue for queue, _ in counts})
        for queue in queues:
            for state in JobState:
                family.add_metric([redact_text(queue), state.value], counts.get((queue, state), 0))
        yield family
        usage = self.observer.usage()
        if not usage:
            return
        running = GaugeMetricFamily(
            "offload_limit_running", "Jobs running under a concurrency limit", labels=["key"]
        )
        waiting = GaugeMetricFamily(
            "offload_limit_waiting", "Due jobs a limit holds back", labels=["key"]
        )
        tokens = GaugeMetricFamily(
            "offload_limit_tokens", "Tokens left in a rate limit's bucket", labels=["key"]
        )
        for used in usage:
            key = [redact_text(used.key)]
            if used.running is not None:
                running.add_metric(key, used.running)
            waiting.add_metric(key, used.waiting)
            if used.tokens is not None:
                tokens.add_metric(key, used.tokens)
        yield running
        yield waiting
        yield tokens


_install_lock = threading.Lock()


def install(jobs: Offload, registry: CollectorRegistry | None = None) -> PrometheusObserver:
    """The app's Prometheus observer, attached on first call (later calls return it).

    Call it where the app is built, next to ``Offload(...)``: an observer counts only what
    happens after it is attached, so one attached by the first scrape would miss every job
    enqueued or run before it."""
    with _install_lock:
        for observer in jobs.observers:
            if isinstance(observer, PrometheusObserver):
                return observer
        observer = PrometheusObserver(jobs, registry)
        jobs.observers.append(observer)
    if jobs.is_open:
        log.warning(
            "metrics attached to an app already open: job counters start now, not at the "
            "start of the process; call offload.metrics.install(jobs) where the app is built",
            extra={"action": "metrics.late_install"},
        )
    return observer


def make_asgi_app(jobs: Offload, registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app serving the metrics in the text format; mount it behind your auth, e.g.
    ``app.mount("/metrics", make_asgi_app(jobs))`` (a mount has no dependencies: protect it
    with a middleware, or serve it on a loopback-only port)."""
    install(jobs, registry)

    async def metrics_app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"use GET\n", "text/plain; charset=utf-8")
            return
        body, content_type = await render(jobs)
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else body, content_type)

    return metrics_app


async def render(jobs: Offload) -> tuple[bytes, str]:
    """The metrics page and its content type, for serving from a route of your own (say one
    behind the same auth dependency as the jobs API)."""
    observer = install(jobs)
    with contextlib.suppress(Exception):  # an outage shows the last known depth
        await asyncio.wait_for(observer.refresh_depth(), DEPTH_TIMEOUT)
    return generate_latest(observer.registry), CONTENT_TYPE_LATEST


async def _respond(
    send: Callable[[Message], Awaitable[None]], status: int, body: bytes, content_type: str
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(jobs: Offload, port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve the app's metrics over HTTP on a thread; call from the worker's event loop.

    Loopback by default: metrics name tasks and queues, which are nobody else's business.
    Raises ``OSError`` when the address is taken. Stop it with ``.shutdown()``.
    """
    observer = install(jobs)
    observer._loop = asyncio.get_running_loop()
    server, _thread = start_http_server(port, addr=host, registry=observer.registry)
    return server
