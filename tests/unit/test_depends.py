"""Task dependencies (``offload.depends``): the graph read at decoration, what enqueue refuses,
and one job's resolution (order, cache, ``yield`` closing), without a worker."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import fastapi
import pytest

from offload import Depends, JobContext, Offload
from offload.depends import DependencyError, DependencyFailed
from offload.errors import Retry

calls: list[str] = []


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


class Settings:
    def __init__(self) -> None:
        calls.append("settings")
        self.dsn = "db://"


async def get_settings() -> Settings:
    return Settings()


async def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> AsyncIterator[str]:
    calls.append("open")
    try:
        yield f"session({settings.dsn})"
    except Exception as exc:
        calls.append(f"saw {type(exc).__name__}")
        raise
    finally:
        calls.append("close")


def sync_client(settings: Annotated[Settings, Depends(get_settings)]) -> str:
    calls.append(f"client in {threading.current_thread().name}")
    return "client"


def sync_resource() -> Iterator[str]:
    calls.append("enter")
    yield "resource"
    calls.append("exit")


async def job_id(ctx: JobContext) -> str:
    return f"{ctx.job_id}#{ctx.attempt}"


def cycle_a(b: Annotated[int, Depends(cycle_b)]) -> int:
    return b


def cycle_b(a: Annotated[int, Depends(cycle_a)]) -> int:
    return a


def needs_a_value(value: int) -> int:
    return value


@pytest.fixture
def jobs() -> Offload:
    return Offload("memory://", embedded_worker=False)


async def resolve(task: Any, context: JobContext | None = None) -> tuple[dict[str, Any], list[str]]:
    """One job's dependency values, and what ran while its stack closed."""
    async with contextlib.AsyncExitStack() as stack:
        values = await task.dependencies.resolve(stack, context, asyncio.to_thread)
        before = list(calls)
    return values, calls[len(before) :]


class TestDecoration:
    def test_both_forms_are_dependencies_and_left_out_of_the_payload(self, jobs: Offload) -> None:
        """An ``Annotated`` marker and a ``Depends`` default both make a dependency; the codec
        encodes neither."""

        @jobs.task
        async def send(
            user_id: int,
            session: Annotated[str, Depends(get_session)],
            settings: Settings = Depends(get_settings),
        ) -> None: ...

        assert frozenset({"session", "settings"}) == send.dependencies.names
        assert ["user_id"] == list(send.codec.adapters)
        assert ("[]", '{"user_id":1}') == send.codec.encode_args((1,), {})

    def test_a_cycle_is_refused_at_decoration(self, jobs: Offload) -> None:
        """A dependency that depends on itself, through another, is named with its path."""
        with pytest.raises(DependencyError, match=r"cycle \(cycle_a -> cycle_b -> cycle_a\)"):

            @jobs.task
            async def loop(value: Annotated[int, Depends(cycle_a)]) -> None: ...

    def test_cpu_bound_with_dependencies_is_refused(self, jobs: Offload) -> None:
        """Values made in the worker cannot be sent to a pool process."""
        with pytest.raises(DependencyError, match=r"cpu_bound task .* cannot take dependencies"):
            jobs.task(cpu_bound=True)(crunch)

    def test_a_dependency_parameter_nothing_fills_is_refused(self, jobs: Offload) -> None:
        """A dependency's parameter needs a ``Depends``, a ``JobContext`` or a default."""
        with pytest.raises(DependencyError, match="parameter 'value' has no Depends"):

            @jobs.task
            async def task(value: int = Depends(needs_a_value)) -> None: ...

    def test_a_positional_only_dependency_is_refused(self, jobs: Offload) -> None:
        """The worker passes dependencies by name."""
        with pytest.raises(DependencyError, match="'settings' is positional-only"):

            @jobs.task
            async def task(settings: Settings = Depends(get_settings), /) -> None: ...

    def test_an_annotation_that_cannot_be_read_is_refused(self, jobs: Offload) -> None:
        """A local function named in a string annotation cannot be found: said, with the
        form that works."""

        async def local() -> int:
            return 1

        with pytest.raises(DependencyError, match="use the `= Depends"):

            @jobs.task
            async def task(value: Annotated[int, Depends(local)]) -> None: ...

    def test_fastapi_depends_is_accepted(self, jobs: Offload) -> None:
        """FastAPI's own marker, with its ``use_cache``, is read as offload's."""

        @jobs.task
        async def task(
            settings: Settings = fastapi.Depends(get_settings),
            again: Settings = fastapi.Depends(get_settings, use_cache=False),
        ) -> None: ...

        assert frozenset({"settings", "again"}) == task.dependencies.names
        assert {True, False} == {node.use_cache for node in task.dependencies.params.values()}

    def test_a_class_and_a_callable_instance_are_dependencies(self, jobs: Offload) -> None:
        """``Depends()`` calls the annotated class; an instance's ``__call__`` sets its kind."""

        class Client:
            async def __call__(self, settings: Settings = Depends(get_settings)) -> str:
                return settings.dsn

        @jobs.task
        async def task(settings: Settings = Depends(), client: str = Depends(Client())) -> None: ...

        params = task.dependencies.params
        assert (Settings, "sync") == (params["settings"].call, params["settings"].kind)
        assert "async" == params["client"].kind

    def test_an_unreadable_annotation_elsewhere_still_registers(self, jobs: Offload) -> None:
        """Only annotations that name a dependency must be readable; the task's others may
        be forward references, as before dependencies existed."""

        @jobs.task
        async def task(later: Unknown, settings: Settings = Depends(get_settings)) -> None:  # type: ignore[name-defined]  # noqa: F821
            ...

        assert frozenset({"settings"}) == task.dependencies.names


def crunch(settings: Settings = Depends(get_settings)) -> None: ...


class TestEnqueue:
    def test_passing_a_dependency_is_refused_by_name(self, jobs: Offload) -> None:
        """By keyword or by position, enqueue and prepare say the worker provides it."""

        @jobs.task
        async def send(user_id: int, session: str = Depends(get_session), n: int = 0) -> None: ...

        message = "session is a dependency the worker provides; do not pass it"
        with pytest.raises(TypeError, match=message):
            send.prepare(1, session="mine")
        with pytest.raises(TypeError, match=message):
            send.prepare(1, "mine")
        with pytest.raises(TypeError, match=message):
            send.options(priority=1).prepare(user_id=1, session="mine")

    def test_parameters_after_a_dependency_are_named(self, jobs: Offload) -> None:
        """A parameter after a dependency is stored by name, never shifted into its place."""

        @jobs.task
        async def send(user_id: int, session: str = Depends(get_session), n: int = 0) -> None: ...

        assert ("[]", '{"user_id":1,"n":2}') == send.codec.encode_args((1,), {"n": 2})

    def test_a_dependency_is_refused_even_with_var_keyword(self, jobs: Offload) -> None:
        """``**extra`` would otherwise take it into the payload."""

        @jobs.task
        async def send(*, settings: Settings = Depends(get_settings), **extra: int) -> None: ...

        with pytest.raises(TypeError, match="settings is a dependency"):
            send.prepare(settings=Settings())


class TestResolve:
    async def test_sub_dependencies_run_first_and_are_cached_per_job(self, jobs: Offload) -> None:
        """``get_settings``, asked for three times, runs once; a yield dependency is closed
        when the stack is."""

        @jobs.task
        async def send(
            session: Annotated[str, Depends(get_session)],
            settings: Settings = Depends(get_settings),
            client: str = Depends(sync_client),
        ) -> None: ...

        values, closing = await resolve(send)
        assert "session(db://)" == values["session"]
        assert values["settings"] is not None
        assert ["settings", "open"] == calls[:2]
        assert 1 == calls.count("settings")
        assert ["close"] == closing

    async def test_use_cache_false_calls_again(self, jobs: Offload) -> None:
        """``Depends(f, use_cache=False)`` gets a value of its own."""

        @jobs.task
        async def send(
            a: Settings = Depends(get_settings),
            b: Settings = Depends(get_settings, use_cache=False),
        ) -> None: ...

        values, _ = await resolve(send)
        assert values["a"] is not values["b"]
        assert 2 == calls.count("settings")

    async def test_each_job_gets_fresh_values(self, jobs: Offload) -> None:
        """The cache lives for one resolution only."""

        @jobs.task
        async def send(settings: Settings = Depends(get_settings)) -> None: ...

        first, _ = await resolve(send)
        second, _ = await resolve(send)
        assert first["settings"] is not second["settings"]

    async def test_sync_dependencies_run_in_a_thread(self, jobs: Offload) -> None:
        """A plain function and a generator run off the loop; the generator is closed."""

        @jobs.task
        async def send(
            client: str = Depends(sync_client), res: str = Depends(sync_resource)
        ) -> None: ...

        values, closing = await resolve(send)
        assert {"client": "client", "res": "resource"} == values
        assert "client in MainThread" not in calls
        assert ["exit"] == closing

    async def test_the_job_context_reaches_a_dependency(self, jobs: Offload) -> None:
        """A dependency annotated ``JobContext`` gets the job's."""

        @jobs.task
        async def send(ident: str = Depends(job_id)) -> None: ...

        assert send.dependencies.wants_context
        ctx = JobContext(job_id="j1", task="t", queue="q", attempt=2)
        values, _ = await resolve(send, ctx)
        assert {"ident": "j1#2"} == values

    async def test_the_job_error_is_thrown_in_at_the_yield(self, jobs: Offload) -> None:
        """The generator sees the exception the job ended with, which goes on."""

        @jobs.task
        async def send(session: str = Depends(get_session)) -> None: ...

        async def job() -> None:
            async with contextlib.AsyncExitStack() as stack:
                await send.dependencies.resolve(stack, None, asyncio.to_thread)
                raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await job()
        assert ["saw ValueError", "close"] == calls[-2:]

    async def test_a_failing_dependency_is_named(self, jobs: Offload) -> None:
        """The error says which dependency raised; commands such as ``Retry`` keep theirs."""

        async def broken() -> int:
            raise ConnectionError("refused")

        async def later() -> int:
            raise Retry(after=5)

        @jobs.task
        async def send(value: int = Depends(broken)) -> None: ...

        @jobs.task
        async def wait(value: int = Depends(later)) -> None: ...

        with pytest.raises(DependencyFailed, match="broken raised ConnectionError: refused"):
            await resolve(send)
        with pytest.raises(Retry):
            await resolve(wait)


class TestInline:
    async def test_an_async_task_resolves_what_is_not_passed(self, jobs: Offload) -> None:
        """Called directly, it resolves and closes its dependencies; a passed one is used."""

        @jobs.task
        async def send(user_id: int, session: str = Depends(get_session)) -> str:
            return f"{user_id} {session}"

        assert "1 session(db://)" == await send(1)
        assert "close" == calls[-1]
        assert "2 mine" == await send(2, session="mine")

    def test_a_sync_task_needs_them_passed(self, jobs: Offload) -> None:
        """A sync task has no loop to resolve on: the call names what it needs."""

        @jobs.task
        def count(settings: Settings = Depends(get_settings)) -> str:
            return settings.dsn

        with pytest.raises(TypeError, match=r"needs its dependencies passed by name \(settings\)"):
            count()
        assert "db://" == count(settings=Settings())
