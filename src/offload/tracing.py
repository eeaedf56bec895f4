"""OpenTelemetry spans for jobs (optional extra: ``pip install 'offload[otel]'``).

``install(jobs)`` adds an observer that opens a ``PRODUCER`` span per enqueued job and a
``CONSUMER`` span per attempt. The producer span's context goes into the job's ``meta`` as a
W3C ``traceparent`` at enqueue; the worker extracts it at run, so the run span is a child of
the enqueue span in the same trace, however long the job waited and whichever process ran it.
The run span is current while the task runs: spans the task opens, and jobs it enqueues,
join the trace. Only ``opentelemetry-api`` is needed; without an SDK configured the spans
are no-ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "offload.tracing needs opentelemetry-api: pip install 'offload[otel]'"
    ) from exc

from offload.correlation import TRACEPARENT
from offload.observers import JobObserver

if TYPE_CHECKING:
    from offload.app import Offload
    from offload.jobs import JobRecord
    from offload.stores.base import NewJob

__all__ = ["TracingObserver", "install"]

TRACESTATE = "tracestate"
_FAILED = frozenset({"failed", "retry", "interrupted"})


class TracingObserver(JobObserver):
    """Spans for enqueue and run, linked through the job's ``traceparent``."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("offload", tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()
        self._producing: dict[str, trace.Span] = {}
        self._running: dict[tuple[str, int], tuple[trace.Span, object]] = {}

    def _parent(self, meta: dict[str, Any]) -> context.Context | None:
        """The context a job's meta carries, if it carries one."""
        if not meta.get(TRACEPARENT):
            return None
        carrier = {TRACEPARENT: str(meta[TRACEPARENT])}
        if meta.get(TRACESTATE):
            carrier[TRACESTATE] = str(meta[TRACESTATE])
        return self.propagator.extract(carrier)

    def enqueuing(self, jobs: Sequence[NewJob]) -> None:
        current = trace.get_current_span().get_span_context().is_valid
        for job in jobs:
            # Without a current span (no instrumented server), continue the trace the request
            # brought in its traceparent header, which the middleware put in the meta.
            parent = None if current else self._parent(job.meta)
            span = self.tracer.start_span(
                f"enqueue {job.task}",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "offload",
                    "messaging.operation": "publish",
                    "messaging.destination.name": job.queue,
                    "messaging.message.id": job.id,
                    "offload.task": job.task,
                },
            )
            carrier: dict[str, str] = {}
            self.propagator.inject(carrier, context=trace.set_span_in_context(span))
            job.meta.update(carrier)
            self._producing[job.id] = span

    def enqueued(
        self,
        jobs: Sequence[NewJob],
        records: Sequence[JobRecord] | None,
        error: BaseException | None = None,
    ) -> None:
        for job in jobs:
            span = self._producing.pop(job.id, None)
            if span is None:
                continue
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()

    def started(self, record: JobRecord) -> None:
        span = self.tracer.start_span(
            f"run {record.task}",
            context=self._parent(record.meta),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "offload",
                "messaging.operation": "process",
                "messaging.destination.name": record.queue,
                "messaging.message.id": record.id,
                "offload.task": record.task,
                "offload.attempt": record.attempt,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        self._running[(record.id, record.attempt)] = (span, token)

    def finished(self, record: JobRecord, outcome: str, duration: float) -> None:
        entry = self._running.pop((record.id, record.attempt), None)
        if entry is None:
            return
        span, token = entry
        span.set_attribute("offload.outcome", outcome)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, outcome))
        context.detach(token)  # type: ignore[arg-type]
        span.end()


def install(jobs: Offload, tracer_provider: trace.TracerProvider | None = None) -> TracingObserver:
    """The app's tracing observer, attached on first call (later calls return it)."""
    for observer in jobs.observers:
        if isinstance(observer, TracingObserver):
            return observer
    observer = TracingObserver(tracer_provider)
    jobs.observers.append(observer)
    return observer
