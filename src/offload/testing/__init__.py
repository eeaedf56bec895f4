"""Helpers for testing apps that use offload, and the store conformance suite (needs pytest).

``eager(jobs)`` runs every due job inline right after it is enqueued, through the real claim,
run and completion path, so endpoint tests need no worker process::

    with eager(jobs):
        client.post("/register", json={...})

``Clock`` moves time by hand through delays, retries and schedules (memory and SQLite
stores); see ``offload.testing.clock``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from offload.app import Offload
from offload.jobs import Job
from offload.testing.clock import Clock
from offload.testing.conformance import StoreConformance

__all__ = ["Clock", "StoreConformance", "eager"]


@contextlib.contextmanager
def eager(jobs: Offload) -> Iterator[None]:
    """Within the block, ``enqueue`` returns only after the due jobs have run."""
    from offload.worker import Worker

    worker = Worker(jobs, concurrency=16, install_signals=False)
    running = False

    async def run_now(_: list[Job[Any]]) -> None:
        nonlocal running
        if running:  # a task enqueuing a task: the outer drain picks it up
            return
        running = True
        try:
            await worker.run_until_idle()
        finally:
            running = False

    jobs.enqueue_hooks.append(run_now)
    try:
        yield
    finally:
        jobs.enqueue_hooks.remove(run_now)
