"""Type-level tests: mypy --strict checks this file in CI, so a typing regression fails."""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

from offload import AsyncTask, Job, JobContext, Offload, SyncTask, TaskCall

jobs = Offload("memory://")


@jobs.task
async def add(a: int, b: int = 0) -> int:
    return a + b


@jobs.task(retries=2)
def shout(ctx: JobContext, text: str) -> str:
    return text.upper()


@jobs.periodic(cron="0 3 * * *", timezone="Europe/Berlin")
@jobs.task(queue="nightly")
async def nightly(ctx: JobContext) -> int:
    return ctx.attempt


@jobs.periodic(every=timedelta(minutes=5))
def poll() -> str:
    return "ok"


async def check_schedules() -> None:
    # @jobs.periodic keeps the task's type above @jobs.task, and makes one from a function.
    assert_type(await nightly.enqueue(), Job[int])
    assert_type(await poll.enqueue(), Job[str])
    assert_type(poll(), str)


async def check() -> None:
    assert isinstance(add, AsyncTask)
    assert isinstance(shout, SyncTask)
    assert_type(await add.enqueue(1, b=2), Job[int])
    assert_type(await shout.enqueue("hi"), Job[str])
    assert isinstance(add.options(delay=5), TaskCall)
    assert_type(await add.options(priority=1).enqueue(1), Job[int])
    assert_type(await (await add.enqueue(1)).result(), int)
    assert_type(shout("inline"), str)
    assert_type(await add(1), int)
    await add.enqueue("x")  # type: ignore[arg-type]
    await shout.enqueue(1)  # type: ignore[arg-type]
    await add.enqueue(1, c=3)  # type: ignore[call-arg]
    await add.options(delay=1).enqueue("x")  # type: ignore[arg-type]
    # The blocking form keeps the signature too.
    assert_type(add.enqueue_sync(1, b=2), Job[int])
    assert_type(shout.options(priority=1).enqueue_sync("hi"), Job[str])
    add.enqueue_sync("x")  # type: ignore[arg-type]
    shout.options(delay=1).enqueue_sync(1)  # type: ignore[arg-type]
    # The context parameter is not part of the enqueue signature.
    await shout.enqueue(JobContext(job_id="", task="", queue="", attempt=1), "x")  # type: ignore[arg-type,call-arg]


def test_module_imports() -> None:
    """The checks above live in ``check``; importing the module must not run them."""
    assert callable(check)
