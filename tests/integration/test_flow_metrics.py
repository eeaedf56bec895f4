"""Flow control in the Prometheus metrics: running, waiting and tokens per limit key, read
from the store at scrape time."""

from __future__ import annotations

from pathlib import Path

from offload import Offload
from offload.metrics import install, render
from offload.stores.base import ClaimRequest


async def test_limits_show_their_usage(tmp_path: Path) -> None:
    jobs = Offload(f"sqlite:///{tmp_path / 'jobs.db'}", embedded_worker=False)
    install(jobs)

    @jobs.task(name="tests.paired", concurrency=1)
    async def paired(n: int) -> None:
        return None

    @jobs.task(name="tests.mail", rate_limit="1/m", rate_limit_key="smtp")
    async def mail(n: int) -> None:
        return None

    async with jobs:
        await jobs.enqueue_many([paired.prepare(n) for n in range(3)])
        await jobs.enqueue_many([mail.prepare(n) for n in range(2)])
        await jobs.store.claim(ClaimRequest("w", 30, 10))
        body, _ = await render(jobs)
    text = body.decode()
    assert 'offload_limit_running{key="tests.paired"} 1.0' in text
    assert 'offload_limit_waiting{key="tests.paired"} 2.0' in text
    assert 'offload_limit_waiting{key="=smtp"} 1.0' in text
    assert 'offload_limit_tokens{key="=smtp"} 0.0' in text
