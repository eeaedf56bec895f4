"""``Offload``: the task registry, the store, and the lifespan that ties them to an app."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

from offload import correlation, workflows
from offload.canvas import Canvas
from offload.coalesce import Coalescer
from offload.errors import ConfigError, StoreUnavailable, UnknownTask
from offload.flow import check_max_queued
from offload.jobs import Job, JobContext, JobRecord
from offload.observers import Observers
from offload.redaction import redact_text
from offload.retry import RetryPolicy
from offload.schedules import Schedule, make_schedule
from offload.stores import Store, open_store
from offload.stores._common import mask_url
from offload.stores.base import (
    BlockingEnqueue,
    FlowControl,
    NewJob,
    QueueCaps,
    TransactionalEnqueue,
)
from offload.tasks import AsyncTask, Prepared, SyncTask, Task, check_max_payload, make_config

if TYPE_CHECKING:
    from fastapi import APIRouter

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("offload")

DEFAULT_URL = "sqlite:///offload.db"
DEFAULT_RETENTION = timedelta(days=7)
# Bytes of JSON a job's arguments may take. Every store keeps them, in memory (Redis) or on
# disk, until the job is purged, and reads them on every claim: large data belongs in a file
# or a database row, passed by reference. 1 MiB holds any ordinary call with room to spare.
DEFAULT_MAX_PAYLOAD = 1 << 20

MetaHook = Callable[[], dict[str, Any] | None]
EnqueueHook = Callable[[list[Job[Any]]], Awaitable[None]]


class TaskDecorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[JobContext, P], Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], R], /) -> SyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncTask[P, R]: ...


TaskT = TypeVar("TaskT", bound=Task[Any, Any])


class PeriodicDecorator(Protocol):
    """``@jobs.periodic(...)``: keeps a task's type, or registers a plain function."""

    @overload
    def __call__(self, fn: TaskT, /) -> TaskT: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[JobContext, P], Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], R], /) -> SyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncTask[P, R]: ...


def resolve_url(url: str | None) -> str:
    return url or os.environ.get("OFFLOAD_URL") or DEFAULT_URL


class Offload:
    """Holds the registered tasks and the store; one per application.

    ``url`` falls back to ``$OFFLOAD_URL``, then to ``sqlite:///offload.db``. ``max_payload``
    is the most bytes of JSON a job's arguments may take (``None``: no limit); a larger call
    raises ``PayloadTooLarge`` at enqueue, before anything is stored. A task's own
    ``max_payload=`` overrides it; either is fixed when the task is registered.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        store: Store | None = None,
        embedded_worker: bool = True,
        concurrency: int = 64,
        queues: Sequence[str] | None = None,
        retention: float | timedelta = DEFAULT_RETENTION,
        clock: Callable[[], float] | None = None,
        max_payload: int | None = DEFAULT_MAX_PAYLOAD,
        queue_limits: Mapping[str, int] | None = None,
    ) -> None:
        if store is not None and clock is not None:
            raise ConfigError("pass the clock to the store you build, or a URL with clock=")
        self.url = store.url if store is not None else resolve_url(url)
        self.store: Store = store if store is not None else open_store(self.url, clock=clock)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        # offload.testing.Clock runs the due work of the apps that use it when time moves.
        attach = getattr(clock, "attach", None)
        if callable(attach):
            attach(self)
        self.embedded_worker = embedded_worker
        self.concurrency = concurrency
        self.max_payload = check_max_payload(max_payload)
        # Backlogs past which an enqueue into the queue is refused (QueueFull), by queue.
        self.queue_limits: dict[str, int] = dict(queue_limits or {})
        for queue_name, most in self.queue_limits.items():
            check_max_queued(f"queue_limits[{queue_name!r}]", most)
        self.queues = list(queues) if queues is not None else None
        self.retention = (
            retention.total_seconds() if isinstance(retention, timedelta) else float(retention)
        )
        if self.retention < 86400:
            log.warning(
                "retention below 24 h shortens how long idempotency keys are remembered",
                extra={"action": "config.retention_short", "retention": self.retention},
            )
        # The request id (or parent job) of whatever enqueues a job goes into its meta.
        self.meta_hooks: list[MetaHook] = [correlation.enqueue_meta]
        # Told of every enqueue and attempt (offload.observers); metrics and tracing append.
        self.observers = Observers()
        self.enqueue_hooks: list[EnqueueHook] = []
        # Ids of this process's running workers (each adds itself), for observers attached
        # after a worker started (the metrics of a service first scraped while it runs).
        self.workers: set[str] = set()
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        # Where enqueue_sync goes: the store's own blocking path, else the loop it is open on,
        # else a loop on a thread of the app's own, opened on first use (a script).
        self._blocking = self.store if isinstance(self.store, BlockingEnqueue) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own: _LoopThread | None = None
        self._sync_lock = threading.Lock()
        # Ends a workflow whose last part is a group; registered on every app, so that any
        # worker of the app runs it.
        self.task(name=workflows.GATHER, retries=0)(workflows.gather)
        # Concurrent enqueues of one loop share a store call (offload.coalesce); the store
        # is looked up at each call, as everywhere else, not bound here.
        self._coalescer = Coalescer(self._store_enqueue)

    def __repr__(self) -> str:
        # The URL's password masked: a repr lands in tracebacks, test reports and logs.
        return f"<Offload {redact_text(self.url)} tasks={len(self.tasks)}>"

    # --- registration ----------------------------------------------------------------

    # An async function also matches the sync overloads (R = a coroutine); overloads are
    # tried in order, so the async ones must come first and mypy's overlap note is expected.
    @overload
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[JobContext, P], Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...
    @overload
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTask[P, R]: ...
    @overload
    def task(self, fn: Callable[Concatenate[JobContext, P], R], /) -> SyncTask[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> SyncTask[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 3,
        backoff: float | timedelta | RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        priority: int = 0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        give_up_on: tuple[type[BaseException], ...] | None = None,
        cpu_bound: bool = False,
        max_payload: int | None = None,
        rate_limit: str | None = None,
        burst: int | None = None,
        rate_limit_key: Callable[..., Any] | str | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[..., Any] | str | None = None,
        max_queued: int | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 3,
        backoff: float | timedelta | RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        priority: int = 0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        give_up_on: tuple[type[BaseException], ...] | None = None,
        cpu_bound: bool = False,
        max_payload: int | None = None,
        rate_limit: str | None = None,
        burst: int | None = None,
        rate_limit_key: Callable[..., Any] | str | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[..., Any] | str | None = None,
        max_queued: int | None = None,
    ) -> Any:
        """Register a function as a task; usable bare (``@jobs.task``) or with options.

        ``rate_limit="10/s"`` (``/m``, ``/h``, ``"5/10s"``; ``burst`` at once after a quiet
        spell) and ``concurrency=2`` hold across every worker, per task or per key
        (``rate_limit_key``/``concurrency_key``: a function of the task's arguments, or a
        name that several tasks share); the store enforces them
        (``offload.stores.FlowControl``). ``max_queued=N`` refuses an enqueue past N queued
        jobs of the task with ``QueueFull`` (429 through the FastAPI adapter)."""

        def decorate(func: Callable[..., Any]) -> Task[Any, Any]:
            if isinstance(func, Task):
                raise ConfigError(
                    f"{func.name} is already a task; put @jobs.periodic(...) above "
                    "@jobs.task(...), not below it"
                )
            config = make_config(
                func,
                name=name,
                queue=queue,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                priority=priority,
                retry_on=retry_on,
                give_up_on=give_up_on,
                cpu_bound=cpu_bound,
                max_payload=max_payload,
                flow={
                    "rate_limit": rate_limit,
                    "burst": burst,
                    "rate_limit_key": rate_limit_key,
                    "concurrency": concurrency,
                    "concurrency_key": concurrency_key,
                    "max_queued": max_queued,
                },
            )
            existing = self.tasks.get(config.name)
            if existing is not None and existing.fn is not func:
                raise ConfigError(
                    f"a task named {config.name!r} is already registered; pass name= to "
                    "register another"
                )
            cls = AsyncTask if asyncio.iscoroutinefunction(func) else SyncTask
            task: Task[Any, Any] = cls(self, func, config)
            self.tasks[config.name] = task
            return task

        if fn is not None:
            return decorate(fn)
        return decorate

    # --- schedules -------------------------------------------------------------------------

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        timezone: str | tzinfo | None = None,
        catch_up: str = "latest",
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> PeriodicDecorator:
        """Run a task on a cron expression or an interval; see ``docs/schedules.md``.

        Goes above ``@jobs.task(...)``, or straight on a function, which is then registered
        as a task with the default options. Returns the task unchanged.
        """

        def decorate(target: Callable[..., Any]) -> Any:
            task = target if isinstance(target, Task) else self.task(target)
            self.schedule(
                task,
                cron=cron,
                every=every,
                timezone=timezone,
                catch_up=catch_up,
                name=name,
                args=args,
                kwargs=kwargs,
            )
            return task

        return decorate  # type: ignore[return-value]  # the overloads describe decorate

    def schedule(
        self,
        task: Task[Any, Any],
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        timezone: str | tzinfo | None = None,
        catch_up: str = "latest",
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Schedule:
        """Add a schedule at run time (e.g. from configuration); the name defaults to the
        task's. Raises ``ConfigError`` for a bad expression, zone or missing argument."""
        if not isinstance(task, Task) or task.app is not self:
            raise ConfigError(f"schedule() takes a task registered on this app, got {task!r}")
        schedule = make_schedule(
            task,
            name=name,
            cron=cron,
            every=every,
            timezone=timezone,
            catch_up=catch_up,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
        )
        if schedule.name in self.schedules:
            raise ConfigError(
                f"a schedule named {schedule.name!r} already exists; pass name= to add another"
            )
        self.schedules[schedule.name] = schedule
        return schedule

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(
                f"no task named {name!r} is registered; registered: {sorted(self.tasks)}"
            ) from None

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the store (idempotent; enqueue and get call it on first use)."""
        own = self._own
        if own is not None and not own.running_here():
            # A script's enqueue_sync opened the store on the app's own loop; a loop of the
            # program's now wants it, and the store's connections belong to one loop.
            await self.close()
        if self._opened:
            return
        self._check_limits()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.store.open()
                self._loop = asyncio.get_running_loop()
                self._opened = True

    async def close(self) -> None:
        """Release the store, and what ``enqueue_sync`` opened without ``open``: the Redis
        store's blocking connections, or the loop thread other stores were opened on (a
        script ends with ``asyncio.run(jobs.close())``)."""
        own = self._own
        if own is not None and not own.running_here():
            self._own = None
            await asyncio.wrap_future(own.submit(self.close()))
            await asyncio.to_thread(own.stop)
            return
        opened, self._opened, self._loop = self._opened, False, None
        if opened or self._blocking is not None:
            await self.store.close()

    @property
    def is_open(self) -> bool:
        """Whether the store is open: jobs may have been enqueued or run since."""
        return self._opened

    async def __aenter__(self) -> Offload:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Use as ``FastAPI(lifespan=jobs.lifespan)``: opens the store, and runs an embedded
        worker unless ``embedded_worker=False``; drains the worker on shutdown."""
        # The worker sits one layer above the app (DESIGN §2); importing it here, at the
        # point of use, keeps `offload.app` importable on its own.
        from offload.worker import Worker

        await self.open()
        worker: Worker | None = None
        runner: asyncio.Task[None] | None = None
        try:
            if self.embedded_worker:
                worker = Worker(
                    self, concurrency=self.concurrency, queues=self.queues, install_signals=False
                )
                runner = asyncio.create_task(worker.run(), name="offload-embedded-worker")
                await worker.started.wait()
            yield
        finally:
            if worker is not None and runner is not None:
                worker.stop()
                await runner
            await self.close()

    def router(
        self,
        *,
        auth: Callable[..., Any] | None = None,
        allow_anonymous: bool = False,
        prefix: str = "",
    ) -> APIRouter:
        """The jobs HTTP API as a FastAPI router; see ``offload.fastapi.jobs_router``.

        Refuses to build without ``auth`` unless ``allow_anonymous=True`` is passed on purpose.
        """
        # FastAPI is an optional extra and an upper layer: import it only when asked for.
        from offload.fastapi import jobs_router

        return jobs_router(self, auth=auth, allow_anonymous=allow_anonymous, prefix=prefix)

    def dashboard(
        self,
        *,
        auth: Callable[..., Any] | None = None,
        allow_anonymous: bool = False,
        mail_sink: Any = None,
        secret: str | None = None,
        log_url: str | None = None,
        title: str = "offload",
    ) -> APIRouter:
        """The web dashboard as a FastAPI router; see ``offload.dashboard.dashboard_router``.

        Refuses to build without ``auth`` unless ``allow_anonymous=True`` is passed on purpose.
        """
        # An upper layer with its own extra (Jinja2): imported only when asked for.
        from offload.dashboard import dashboard_router

        return dashboard_router(
            self,
            auth=auth,
            allow_anonymous=allow_anonymous,
            mail_sink=mail_sink,
            secret=secret,
            log_url=log_url,
            title=title,
        )

    # --- jobs --------------------------------------------------------------------------

    async def enqueue_many(
        self, prepared: Iterable[Prepared[Any]], *, connection: Any = None
    ) -> list[Job[Any]]:
        """Store a batch of prepared calls in one round trip (see ``Task.prepare``); with
        ``connection``, on the application's own database connection inside its open
        transaction (see ``Task.options``)."""
        items = list(prepared)
        if not items:
            return []
        await self.open()
        new_jobs = self._enqueuing(items)
        try:
            if connection is None:
                records = await self._coalescer.enqueue(new_jobs)
            else:
                records = await self._transactional().enqueue_in(connection, new_jobs)
        except BaseException as exc:
            if self.observers:
                self.observers.enqueued(new_jobs, None, exc)
            raise
        jobs = self._enqueued(items, new_jobs, records)
        for hook in self.enqueue_hooks:
            await hook(jobs)
        return jobs

    def _store_enqueue(self, jobs: Sequence[NewJob]) -> Awaitable[list[JobRecord]]:
        return self.store.enqueue(jobs)

    async def enqueue_workflow(self, part: Canvas, *, key: str | None = None) -> Job[Any]:
        """Store a workflow (``chain``, ``group``, ``chord``) at once; ``part.enqueue()``
        calls this. Returns the handle of its last step."""
        await self.open()
        return await workflows.enqueue_workflow(self, part, key)

    def enqueue_many_sync(self, prepared: Iterable[Prepared[Any]]) -> list[Job[Any]]:
        """``enqueue_many`` for code that is not async: a ``def`` endpoint (FastAPI runs it
        in a thread), a sync task, a script. Returns once the jobs are durable.

        It refuses to run on an event loop's thread, where blocking would stall every other
        request: there, ``await`` the async form. The Redis store sends from the calling
        thread; other stores are reached through the loop the app is open on, or, in a
        program with no open app, through a loop thread of the app's own."""
        items = list(prepared)
        if not items:
            return []
        if _running_loop() is not None:
            raise RuntimeError(
                "enqueue_sync() blocks, so it cannot run on an event loop's thread (it would "
                "stall the loop); in async code use `await task.enqueue(...)`"
            )
        blocking = self._blocking
        if blocking is not None and not self.enqueue_hooks:
            new_jobs = self._enqueuing(items)
            try:
                records = blocking.enqueue_blocking(new_jobs)
            except BaseException as exc:
                if self.observers:
                    self.observers.enqueued(new_jobs, None, exc)
                raise
            return self._enqueued(items, new_jobs, records)
        loop = self._loop or self._open_own_loop()
        if loop.is_closed():
            raise StoreUnavailable(
                "the job store was opened on an event loop that has since closed; close "
                "the app on its loop (`async with jobs:` does) before using it elsewhere"
            )
        return asyncio.run_coroutine_threadsafe(self.enqueue_many(items), loop).result()

    def _check_limits(self) -> None:
        """Limits are the store's to enforce: a store that cannot must not run limited tasks
        unlimited (or take a backlog past its limit), so the app refuses to open on it."""
        flows = {name: task.config.flow for name, task in self.tasks.items() if task.config.flow}
        paced = sorted(n for n, f in flows.items() if f.rate or f.concurrency)
        if paced and not isinstance(self.store, FlowControl):
            raise ConfigError(
                f"task {paced[0]!r} has a rate or concurrency limit, which the store "
                f"enforces, and the store at {mask_url(self.url)} cannot; use a sqlite://, "
                "redis:// or postgresql:// store for limited tasks"
            )
        capped = sorted(n for n, f in flows.items() if f.max_queued)
        if (capped or self.queue_limits) and not isinstance(self.store, QueueCaps):
            what = f"task {capped[0]!r}" if capped else "queue_limits"
            raise ConfigError(
                f"{what} sets a max_queued, which the store enforces at enqueue, and the "
                f"store at {mask_url(self.url)} cannot; use a sqlite:/// or redis:// store for it"
            )

    def run_sync(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run ``coro`` on the loop the store is open on, from code that is not async (the
        sync reads of a ``Job``), as ``enqueue_many_sync`` reaches the store."""
        if _running_loop() is not None:
            coro.close()
            raise RuntimeError(
                "a *_sync() call blocks, so it cannot run on an event loop's thread (it would "
                "stall the loop); in async code await the async form"
            )
        loop = self._loop or self._open_own_loop()
        if loop.is_closed():
            coro.close()
            raise StoreUnavailable(
                "the job store was opened on an event loop that has since closed; close "
                "the app on its loop (`async with jobs:` does) before using it elsewhere"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _transactional(self) -> TransactionalEnqueue:
        store = self.store
        if not isinstance(store, TransactionalEnqueue):
            raise ConfigError(
                f"enqueue(connection=...) writes the job in your database transaction, which "
                f"the store at {mask_url(self.url)} cannot join; use a postgresql:// store on "
                "the same database, or enqueue after your transaction commits"
            )
        return store

    def _open_own_loop(self) -> asyncio.AbstractEventLoop:
        """Open the store on a loop thread of the app's own, once: a script's calls then cost
        a hop each, not a store opened and closed per call (for SQLite, about 50 ms)."""
        with self._sync_lock:
            if self._loop is None:
                own = _LoopThread()
                try:
                    own.submit(self.open()).result()
                except BaseException:
                    own.stop()
                    raise
                self._own = own
            loop = self._loop
        if loop is None:  # pragma: no cover - closed by another thread in between
            raise StoreUnavailable("the app was closed while enqueue_sync opened it; retry")
        return loop

    def _enqueuing(self, items: list[Prepared[Any]]) -> list[NewJob]:
        """The batch's jobs with the caller's correlation meta, observers told."""
        if self.meta_hooks:
            extra: dict[str, Any] = {}
            for meta_hook in self.meta_hooks:
                extra.update(meta_hook() or {})
            if extra:
                for item in items:
                    item.job.meta = {**extra, **item.job.meta}
        new_jobs = [item.job for item in items]
        if self.observers:
            self.observers.enqueuing(new_jobs)
        return new_jobs

    def _enqueued(
        self, items: list[Prepared[Any]], new_jobs: list[NewJob], records: list[JobRecord]
    ) -> list[Job[Any]]:
        if self.observers:
            self.observers.enqueued(new_jobs, records)
        # DEBUG: a batch of thousands would otherwise cost a line each on the caller's path.
        if log.isEnabledFor(logging.DEBUG):
            _log_enqueued(new_jobs, records)
        return [
            Job(record, self.store, item.task.codec.decode_result, self.run_sync)
            for record, item in zip(records, items, strict=True)
        ]

    def job(self, record: JobRecord) -> Job[Any]:
        task = self.tasks.get(record.task)
        decode = None if task is None else task.codec.decode_result
        return Job(record, self.store, decode, self.run_sync)

    async def get(self, job_id: str) -> Job[Any] | None:
        """The job with that id, or ``None`` when there is none (or it was purged)."""
        await self.open()
        record = await self.store.get(job_id)
        return None if record is None else self.job(record)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _LoopThread:
    """An event loop on a daemon thread, for a program that runs none (a script calling
    ``enqueue_sync``). Daemon, so a script that never closes the app still exits: every job
    ``enqueue_sync`` returned is committed by then."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="offload-enqueue-sync", daemon=True
        )
        self._thread.start()

    def running_here(self) -> bool:
        return _running_loop() is self.loop

    def submit(self, coro: Coroutine[Any, Any, R]) -> concurrent.futures.Future[R]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _log_enqueued(new_jobs: Sequence[Any], records: Sequence[JobRecord]) -> None:
    for new, record in zip(new_jobs, records, strict=True):
        fields = correlation.job_fields(record)
        del fields["attempt"]
        log.debug(
            "job enqueued" if new.id == record.id else "job already enqueued under this key",
            extra={"action": "job.enqueued", "existing": new.id != record.id, **fields},
        )
