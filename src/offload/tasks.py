"""``@jobs.task``: a function becomes a ``Task[P, R]`` whose ``enqueue`` keeps its signature.

The parameter spec ``P`` excludes a leading ``JobContext`` parameter, so mypy checks
``await send_welcome.enqueue(user_id=1)`` against the function's own parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from offload.canvas import Canvas, Group, Signature
from offload.depends import DependencyError, plan
from offload.flow import FlowOptions, make_flow
from offload.ids import new_id
from offload.jobs import Job, JobContext
from offload.records import JobLimits
from offload.redaction import SECRET_ARGS_META
from offload.retry import RetryPolicy
from offload.serialization import Codec, payload_size
from offload.stores.base import NewJob

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
A = TypeVar("A")

DEFAULT_QUEUE = "default"


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {seconds} s")
    return seconds


@dataclass(frozen=True, slots=True)
class TaskConfig:
    name: str
    queue: str
    priority: int
    timeout: float | None
    policy: RetryPolicy
    cpu_bound: bool
    # Bytes of JSON the arguments may take; None: the app's ``max_payload``.
    max_payload: int | None = None
    # Rate and concurrency limits, enforced by the store (offload.flow).
    flow: FlowOptions | None = None


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Per-call overrides, from ``task.options(...)``."""

    delay: float | None = None
    run_at: float | None = None
    priority: int | None = None
    queue: str | None = None
    key: str | None = None
    retries: int | None = None
    timeout: float | None = None
    connection: Any = None
    """The application's database connection to enqueue on, inside its transaction."""


@dataclass(slots=True)
class Prepared(Generic[R]):
    """A call that has been checked and encoded but not yet stored; see ``enqueue_many``."""

    task: Task[Any, R]
    job: NewJob


class Enqueuer(Protocol):
    """What a task needs of the app it is registered on (``Offload``): its payload limit and
    the two ways to store calls. Named here so that this module, below the app, never imports
    it (DESIGN §2)."""

    @property
    def max_payload(self) -> int | None: ...

    @property
    def queue_limits(self) -> Mapping[str, int]: ...

    async def enqueue_many(
        self, prepared: Iterable[Prepared[Any]], *, connection: Any = None
    ) -> list[Job[Any]]: ...

    def enqueue_many_sync(self, prepared: Iterable[Prepared[Any]]) -> list[Job[Any]]: ...

    async def enqueue_workflow(self, part: Canvas, *, key: str | None = None) -> Job[Any]: ...


class Task(Generic[P, R]):
    """A registered task. ``await task.enqueue(...)`` stores a job; calling it runs inline."""

    def __init__(self, app: Enqueuer, fn: Callable[..., Any], config: TaskConfig) -> None:
        self.app = app
        self.fn = fn
        self.config = config
        self.name = config.name
        self.dependencies = plan(fn, config.name)
        if self.dependencies and config.cpu_bound:
            raise DependencyError(
                f"cpu_bound task {config.name!r} cannot take dependencies "
                f"({', '.join(sorted(self.dependencies.names))}): their values live in the "
                "worker and cannot be sent to a pool process; resolve them inside the task, "
                "or drop cpu_bound=True"
            )
        self.codec = Codec(fn, config.name, self.dependencies.names)
        limit = config.max_payload if config.max_payload is not None else app.max_payload
        self.max_payload = limit
        self._payload_limit = sys.maxsize if limit is None else limit
        # A call of at most a quarter of the limit in characters is within it however it
        # encodes (UTF-8 takes at most four bytes a character): only a larger one is measured.
        self._unmeasured = self._payload_limit // 4
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", config.name)
        self.__qualname__ = getattr(fn, "__qualname__", config.name)
        self.__module__ = fn.__module__

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.config.queue}>"

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        key: str | None = None,
        retries: int | None = None,
        timeout: float | timedelta | None = None,
        connection: Any = None,
    ) -> TaskCall[P, R]:
        """Override scheduling for the jobs enqueued through the returned object.

        ``connection``: enqueue on the application's own database connection, inside its
        open transaction (a psycopg ``AsyncConnection``, or SQLAlchemy's ``AsyncConnection``
        or ``AsyncSession`` on psycopg), so that the job commits or rolls back with the rows
        written beside it. Needs a store that can (PostgreSQL, on the same database)."""
        if delay is not None and run_at is not None:
            raise ValueError("pass either delay= or run_at=, not both")
        if run_at is not None and run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
        if retries is not None and retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if queue is not None and not queue:
            raise ValueError("queue must be a non-empty string")
        if key is not None and not key:
            raise ValueError("key must be a non-empty string")
        secs = _seconds(timeout, "timeout")
        if secs is not None and secs == 0:
            raise ValueError("timeout must be positive")
        return TaskCall(
            self,
            EnqueueOptions(
                delay=_seconds(delay, "delay"),
                run_at=None if run_at is None else run_at.timestamp(),
                priority=priority,
                queue=queue,
                key=key,
                retries=retries,
                timeout=secs,
                connection=connection,
            ),
        )

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> Prepared[R]:
        """Check and encode a call for ``jobs.enqueue_many``; raises ``TypeError`` early."""
        return self._prepare(args, kwargs, _NO_OPTIONS)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Store a job for this call; returns once the job is durable."""
        jobs = await self.app.enqueue_many([self._prepare(args, kwargs, _NO_OPTIONS)])
        return jobs[0]

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """``enqueue`` for code that is not async (see ``Offload.enqueue_many_sync``)."""
        return self.app.enqueue_many_sync([self._prepare(args, kwargs, _NO_OPTIONS)])[0]

    # A signature either takes the result of the step before it as its first argument
    # (then the call leaves that parameter out) or gives every argument (the first step of
    # a chain, a group's member); mypy accepts a call that fits either, and the workflow
    # checks which one each step is when it is built.
    @overload
    def s(
        self: Task[Concatenate[A, P2], R], *args: P2.args, **kwargs: P2.kwargs
    ) -> Signature[R]: ...
    @overload
    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]: ...
    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """This call as a workflow step (``offload.chain``, ``group``, ``chord``); after
        another step it gets that step's result as its first argument."""
        return Signature(self, args, kwargs, _NO_OPTIONS)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable step: it waits for the step before it but ignores its result."""
        return Signature(self, args, kwargs, _NO_OPTIONS, immutable=True)

    def map(
        self: Task[Concatenate[A, P2], R], items: Iterable[A], *args: P2.args, **kwargs: P2.kwargs
    ) -> Group[R]:
        """A group of one call per item, the item first: ``clean.map(chunks)``."""
        return Group(Signature(self, (item, *args), kwargs, _NO_OPTIONS) for item in items)

    def _prepare_piped(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], opts: EnqueueOptions
    ) -> Prepared[R]:
        """``_prepare`` for a workflow step whose first argument is the result before it."""
        return self._prepare(args, kwargs, opts, piped=True)

    def _prepare(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: EnqueueOptions,
        piped: bool = False,
    ) -> Prepared[R]:
        if piped:
            enc_args, enc_kwargs = self.codec.encode_piped(args, kwargs)
        else:
            enc_args, enc_kwargs = self.codec.encode_args(args, kwargs)
        if len(enc_args) + len(enc_kwargs) > self._unmeasured:
            payload_size(self.name, self._payload_limit, enc_args, enc_kwargs)
        cfg = self.config
        retries = opts.retries if opts.retries is not None else cfg.policy.retries
        secret = self.codec.secret_params
        queue = opts.queue or cfg.queue
        caps = self.app.queue_limits
        queue_max = caps.get(queue) if caps else None
        limits = None
        if cfg.flow is not None:
            limits = cfg.flow.limits_for(args, kwargs, queue_max)
        elif queue_max is not None:
            limits = JobLimits(queue_max=queue_max)
        # By position, in NewJob's field order: keywords cost more than the rest of the job
        # (id, task, queue, args, kwargs, priority, max_attempts, run_at, delay, timeout, key,
        # meta).
        return Prepared(
            self,
            NewJob(
                new_id(),
                cfg.name,
                queue,
                enc_args,
                enc_kwargs,
                cfg.priority if opts.priority is None else opts.priority,
                retries + 1,
                opts.run_at,
                opts.delay or 0.0,
                opts.timeout if opts.timeout is not None else cfg.timeout,
                opts.key,
                {SECRET_ARGS_META: list(secret)} if secret else {},
                limits,
            ),
        )

    def _inline(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        param = self.codec.context_param
        if self.dependencies and not self.dependencies.names.issubset(kwargs):
            return self._inline_resolving(args, kwargs)
        if param is None or param in kwargs:
            return self.fn(*args, **kwargs)
        ctx = self._inline_context()
        if self.codec.context_first:
            return self.fn(ctx, *args, **kwargs)
        return self.fn(*args, **{**kwargs, param: ctx})

    def _inline_context(self) -> JobContext:
        return JobContext(job_id="inline", task=self.name, queue=self.config.queue, attempt=1)

    def _inline_resolving(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An async task called inline resolves the dependencies the call did not pass, as a
        worker would, and closes them when it returns. A sync task cannot (some dependencies
        may be async, and it may be called on a loop's thread): it must be given them."""
        missing = sorted(self.dependencies.names - kwargs.keys())
        if not self.is_async:
            raise TypeError(
                f"task {self.name!r} called inline needs its dependencies passed by name "
                f"({', '.join(missing)}); only a worker, or an inline call of an async task, "
                "resolves them"
            )
        return self._run_resolving(args, kwargs)

    async def _run_resolving(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        codec = self.codec
        ctx = self._inline_context()
        async with contextlib.AsyncExitStack() as stack:
            values = await self.dependencies.resolve(stack, ctx, asyncio.to_thread, kwargs)
            call_args, call_kwargs = list(args), {**kwargs, **values}
            if codec.context_param is not None and codec.context_param not in kwargs:
                codec.add_context(call_args, call_kwargs, ctx)
            return await self.fn(*call_args, **call_kwargs)


class AsyncTask(Task[P, R]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the function inline, as if it were not a task."""
        return self._inline(args, kwargs)  # type: ignore[no-any-return]


class SyncTask(Task[P, R]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, as if it were not a task."""
        return self._inline(args, kwargs)  # type: ignore[no-any-return]


class TaskCall(Generic[P, R]):
    """A task with per-call options; ``enqueue`` has the task's signature."""

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
        self.task = task
        self.opts = options

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> Prepared[R]:
        self._no_connection("prepare", "pass connection= to jobs.enqueue_many instead")
        return self.task._prepare(args, kwargs, self.opts)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        prepared = self.task._prepare(args, kwargs, self.opts)
        jobs = await self.task.app.enqueue_many([prepared], connection=self.opts.connection)
        return jobs[0]

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        self._no_connection("enqueue_sync", "await enqueue() in the code that holds it")
        prepared = self.task._prepare(args, kwargs, self.opts)
        return self.task.app.enqueue_many_sync([prepared])[0]

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """``Task.s`` with these options (queue, priority, retries, timeout, delay)."""
        return Signature(self.task, args, kwargs, self.opts)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """``Task.si`` with these options."""
        return Signature(self.task, args, kwargs, self.opts, immutable=True)

    def _no_connection(self, method: str, instead: str) -> None:
        """A connection this call would not use must not be dropped silently: the job would
        then be stored outside the caller's transaction."""
        if self.opts.connection is not None:
            raise TypeError(f"{method}() does not take the options' connection; {instead}")

    def options(self, **changes: Any) -> TaskCall[P, R]:
        merged = self.task.options(**changes)
        # Later options win; unspecified ones keep this call's values.
        base = self.opts
        new = merged.opts
        combined = replace(
            base,
            **{k: getattr(new, k) for k in new.__dataclass_fields__ if getattr(new, k) is not None},
        )
        return TaskCall(self.task, combined)


_NO_OPTIONS = EnqueueOptions()


def _module_name(fn: Callable[..., Any]) -> str:
    """The importable name of the function's module, also when it runs as ``python -m``.

    Otherwise a worker started with ``python -m app.jobs`` would register ``__main__.send``
    while the web process enqueues ``app.jobs.send``, and every job would fail as unknown.
    """
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            return str(spec.name)
    return module


def make_config(
    fn: Callable[..., Any],
    *,
    name: str | None,
    queue: str | None,
    retries: int,
    backoff: float | timedelta | RetryPolicy | None,
    timeout: float | timedelta | None,
    priority: int,
    retry_on: tuple[type[BaseException], ...] | None,
    give_up_on: tuple[type[BaseException], ...] | None,
    cpu_bound: bool,
    max_payload: int | None = None,
    flow: dict[str, Any] | None = None,
) -> TaskConfig:
    if not callable(fn):
        raise TypeError(f"@jobs.task decorates a function, got {fn!r}")
    if cpu_bound and inspect.iscoroutinefunction(fn):
        raise TypeError(f"cpu_bound=True needs a plain (sync) function; {fn.__qualname__} is async")
    if asyncio.iscoroutine(fn):
        raise TypeError("@jobs.task got a coroutine object; decorate the function itself")
    task_name = name or f"{_module_name(fn)}.{fn.__qualname__}"
    if cpu_bound and "<locals>" in getattr(fn, "__qualname__", ""):
        raise TypeError(
            f"cpu_bound task {task_name} must be a function defined at module level so that "
            "the process pool can import it (it may be registered anywhere)"
        )
    secs = _seconds(timeout, "timeout")
    if secs is not None and secs == 0:
        raise ValueError("timeout must be positive")
    return TaskConfig(
        name=task_name,
        queue=queue or DEFAULT_QUEUE,
        priority=priority,
        timeout=secs,
        policy=RetryPolicy.of(retries, backoff, retry_on, give_up_on),
        cpu_bound=cpu_bound,
        max_payload=check_max_payload(max_payload),
        flow=make_flow(task_name, **flow) if flow else None,
    )


def check_max_payload(limit: int | None) -> int | None:
    """A payload limit as given, once it is known to be a positive number of bytes."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(
            f"max_payload is a number of bytes above 0 (or None for no limit), got {limit!r}"
        )
    return limit
