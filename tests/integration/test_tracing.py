"""OpenTelemetry: the enqueue span and the run span share one trace through the job's meta."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from offload import JobContext, Offload, Worker
from offload.tracing import install


class TestSpans:
    async def test_enqueue_and_run_share_the_trace(self, jobs: Offload) -> None:
        """The run span is a child of the enqueue span; a job enqueued by the task joins the
        same trace, under the run span."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        install(jobs, provider)

        @jobs.task(name="child")
        async def child() -> None:
            return None

        @jobs.task(name="parent")
        async def parent(ctx: JobContext) -> str:
            job = await child.enqueue()
            return job.id

        job = await parent.enqueue()
        assert job.meta["traceparent"].startswith("00-")
        worker = Worker(jobs, concurrency=2, install_signals=False)
        runner = asyncio.create_task(worker.run())
        child_id = await job.result(timeout=10)
        child_job = await jobs.get(child_id)
        assert child_job is not None
        await child_job.result(timeout=10)
        worker.stop()
        await runner

        spans = {span.name: span for span in exporter.get_finished_spans()}
        assert {"enqueue parent", "run parent", "enqueue child", "run child"} == set(spans)
        enqueue, run = spans["enqueue parent"], spans["run parent"]
        assert (SpanKind.PRODUCER, SpanKind.CONSUMER) == (enqueue.kind, run.kind)
        trace_id = enqueue.context.trace_id
        assert {trace_id} == {span.context.trace_id for span in spans.values()}
        assert run.parent is not None
        assert enqueue.context.span_id == run.parent.span_id
        child_enqueue = spans["enqueue child"]
        assert child_enqueue.parent is not None
        assert run.context.span_id == child_enqueue.parent.span_id
        assert run.attributes is not None
        assert "succeeded" == run.attributes["offload.outcome"]

    async def test_request_traceparent_is_continued(self, jobs: Offload) -> None:
        """A traceparent the request brought (and no span current) is the enqueue's parent."""
        from offload import correlation

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        install(jobs, provider)

        @jobs.task(name="t")
        async def t() -> None:
            return None

        incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with correlation.bound({"request_id": "r", "traceparent": incoming}):
            job = await t.enqueue()
        (span,) = exporter.get_finished_spans()
        assert 0x0AF7651916CD43DD8448EB211C80319C == span.context.trace_id
        assert job.meta["traceparent"] != incoming
        assert job.meta["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
