"""``offload worker module:jobs``: run a worker process until it is told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time

import typer

from offload.app import Offload
from offload.cli._common import USAGE, CliError, load_app
from offload.eventloop import new_event_loop
from offload.stores import open_store
from offload.worker import DEFAULT_GRACE, DEFAULT_LEASE, Worker

log = logging.getLogger("offload.cli")

# Sync tasks run on threads named after this prefix (see offload.executors).
SYNC_THREAD_PREFIX = "offload-sync"
# How long idle pool threads get to notice the pool shut down before we decide that the ones
# still alive are stuck in a task.
THREAD_SETTLE = 0.5


def _queues(values: list[str] | None) -> list[str] | None:
    out = [q.strip() for value in values or [] for q in value.split(",") if q.strip()]
    return out or None


def _stuck_threads() -> list[threading.Thread]:
    deadline = time.monotonic() + THREAD_SETTLE
    alive = []
    for thread in threading.enumerate():
        if thread.name.startswith(SYNC_THREAD_PREFIX):
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                alive.append(thread)
    return alive


async def _work(
    jobs: Offload,
    *,
    concurrency: int,
    queues: list[str] | None,
    lease: float,
    grace: float,
    metrics: tuple[str, int] | None = None,
) -> None:
    server = None
    if metrics is not None:
        from offload.metrics import serve

        host, port = metrics
        try:
            server = serve(jobs, port, host)
        except OSError as exc:
            raise CliError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); "
                "pick a free port with --metrics-port",
                USAGE,
            ) from None
        log.info(
            "serving metrics",
            extra={"action": "worker.metrics", "host": host, "port": server.server_port},
        )
    worker = Worker(
        jobs,
        concurrency=concurrency,
        queues=queues,
        lease=lease,
        grace=grace,
        install_signals=True,
    )
    try:
        await worker.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        await jobs.close()


def worker(
    target: str = typer.Argument(
        ..., metavar="MODULE:ATTR", help="The Offload instance to serve, e.g. myapp.tasks:jobs."
    ),
    concurrency: int = typer.Option(64, "--concurrency", "-c", min=1, help="Jobs in flight."),
    queues: list[str] | None = typer.Option(
        None,
        "--queues",
        "-q",
        help="Queues to take jobs from (repeat or comma-separate); all queues by default.",
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        help="Store URL overriding the app's own (which defaults to $OFFLOAD_URL, then to "
        "sqlite:///offload.db).",
        show_default=False,
    ),
    lease: float = typer.Option(
        DEFAULT_LEASE,
        "--lease",
        min=0.1,
        help="Seconds a job stays claimed without a heartbeat; a dead worker's jobs are "
        "requeued after this.",
    ),
    grace: float = typer.Option(
        DEFAULT_GRACE,
        "--grace",
        min=0.0,
        help="Seconds running jobs get to finish after SIGTERM before they are requeued.",
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        # Help text is Rich markup, where a bare [prometheus] is a style tag and vanishes.
        help="Serve Prometheus metrics over HTTP on this port; needs the prometheus extra "
        "(pip install 'offload\\[prometheus]').",
        show_default=False,
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1",
        "--metrics-host",
        help="Address for --metrics-port; loopback by default, 0.0.0.0 for every interface.",
    ),
    json_logs: bool | None = typer.Option(
        None,
        "--json-logs/--no-json-logs",
        help="JSON log lines (default unless stderr is a terminal).",
        show_default=False,
    ),
) -> None:
    """Run jobs until SIGTERM or SIGINT; a first signal drains, a second stops at once."""
    # structlog is imported only by the command that logs, to keep `offload jobs ...` snappy.
    from offload.logging import configure_logging, flush_logging

    try:
        configure_logging(
            json=json_logs if json_logs is not None else not sys.stderr.isatty(), level=log_level
        )
    except ValueError as exc:
        raise CliError(str(exc), USAGE) from None
    if metrics_port is not None:
        try:
            import offload.metrics  # noqa: F401  (fail before starting, not at the first scrape)
        except ImportError as exc:
            raise CliError(str(exc), USAGE) from None
    jobs = load_app(target)
    if url:
        # The app has not opened its store yet (importing a module must not connect), so
        # swapping it here is safe: tasks reach the store through the app, never directly.
        jobs.store = open_store(url)
        jobs.url = url
    # Timers on time: short I/O-bound jobs would otherwise lose 5-8 % to rounding.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(
            _work(
                jobs,
                concurrency=concurrency,
                queues=_queues(queues),
                lease=lease,
                grace=grace,
                metrics=None if metrics_port is None else (metrics_host, metrics_port),
            )
        )
    stuck = _stuck_threads()
    if stuck:
        # A sync task cannot be interrupted, and the thread pool's exit hook joins every
        # thread, so one task stuck in a loop or a blocking call would keep this process
        # alive forever after it was told to stop. Its job was already requeued (the worker
        # reported that before returning), so nothing is lost by leaving without the join.
        log.warning(
            "exiting with sync tasks still running on abandoned threads",
            extra={"action": "worker.abandon_threads", "threads": len(stuck)},
        )
        flush_logging()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
