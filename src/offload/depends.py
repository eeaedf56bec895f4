"""Dependencies of tasks, declared as in FastAPI and resolved by the worker for each job.

``session: Annotated[AsyncSession, Depends(get_session)]`` or ``session = Depends(get_session)``
names a function the worker calls before the task runs; what it returns (or yields) is passed
in. Such a parameter is never part of the stored arguments: a database session or a client
cannot be JSON, and the worker that runs the job, not the caller, is where it belongs.

The graph is read once, when ``@jobs.task`` decorates the function, so a signature the worker
could not satisfy (a cycle, a parameter nothing provides) fails there and not at a job's run.
Each run resolves it afresh: values are cached within one job only, and what a ``yield``
dependency holds is released when that job ends, however it ends.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from offload.errors import Cancel, ConfigError, Fail, OffloadError, Retry
from offload.jobs import JobContext

__all__ = [
    "Dependency",
    "DependencyError",
    "DependencyFailed",
    "Depends",
    "TaskDependencies",
    "plan",
]

T = TypeVar("T")
InThread = Callable[..., Awaitable[Any]]


class DependencyError(ConfigError):
    """A task's dependencies cannot be resolved as declared."""


class DependencyFailed(OffloadError):
    """A dependency of the task raised; the job fails or retries on the error it raised."""

    def __init__(self, dependency: str, error: BaseException) -> None:
        self.dependency = dependency
        self.error = error
        super().__init__(f"dependency {dependency} raised {type(error).__name__}: {error}")


@dataclass(frozen=True, slots=True)
class Dependency:
    """The marker ``Depends(...)`` returns; FastAPI's own ``Depends`` is read the same way."""

    dependency: Callable[..., Any] | None
    use_cache: bool = True


def Depends(dependency: Callable[..., Any] | None = None, *, use_cache: bool = True) -> Any:
    """Declare a parameter the worker fills by calling ``dependency`` for each job.

    Typed ``Any``, as FastAPI's is, so that ``session: AsyncSession = Depends(get_session)``
    type-checks and the parameter, having a default, is left out of ``enqueue``. With
    ``use_cache=False`` the function is called again wherever it is asked for in one job's
    graph, instead of once. Without ``dependency`` the parameter's annotated class is called.
    """
    if dependency is not None and not callable(dependency):
        raise DependencyError(f"Depends() takes a function, got {dependency!r}")
    return Dependency(dependency, use_cache)


def marker_of(value: object) -> Dependency | None:
    """``value`` as a dependency marker: offload's, or one with FastAPI's ``dependency`` and
    ``use_cache`` attributes (``fastapi.Depends``, read without importing FastAPI)."""
    if isinstance(value, Dependency):
        return value
    if isinstance(value, type):
        return None
    call = getattr(value, "dependency", _MISSING)
    use_cache = getattr(value, "use_cache", _MISSING)
    if (call is None or callable(call)) and isinstance(use_cache, bool):
        return Dependency(call, use_cache)
    return None


_MISSING = object()


# Raised by a dependency, these keep their meaning (retry later, fail now, cancel): they are
# how a dependency says "the database is down, try again in a minute". A failure already
# named passes through the dependencies that asked for the one that failed.
_PASS_THROUGH: tuple[type[BaseException], ...] = (Retry, Fail, Cancel, DependencyFailed)


class _Context:
    """Stands, in the graph, for the job's ``JobContext``."""


_CONTEXT = _Context()


@dataclass(frozen=True, slots=True, eq=False)
class _Node:
    call: Callable[..., Any]
    name: str
    kind: str  # "async", "sync", "async_gen" or "gen"
    params: tuple[_Edge, ...]
    use_cache: bool


# A parameter of a dependency and what fills it.
_Edge = tuple[str, "_Node | _Context"]


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _kind(fn: Callable[..., Any]) -> str:
    # A callable instance's kind is its ``__call__``'s (a function or partial reads as itself).
    for target in (fn, type(fn).__call__):
        if inspect.isasyncgenfunction(target):
            return "async_gen"
        if inspect.isgeneratorfunction(target):
            return "gen"
        if inspect.iscoroutinefunction(target):
            return "async"
    return "sync"


def _annotated(fn: Callable[..., Any]) -> Any:
    """What holds the annotations of ``fn``'s parameters: a class's ``__init__``, a callable
    instance's ``__call__``, or the function itself."""
    if isinstance(fn, type):
        return getattr(fn, "__init__", fn)
    if not inspect.isroutine(fn) and not isinstance(fn, functools.partial):
        return type(fn).__call__
    return inspect.unwrap(fn)


def param_hints(fn: Callable[..., Any], what: str, strict: bool) -> dict[str, Any]:
    """The parameters' annotations, evaluated; one by one when the whole set cannot be (a
    forward reference elsewhere in the signature), so that ``Annotated`` markers are found.

    One that cannot be evaluated is refused when it names a dependency, and, when
    ``strict`` (a dependency's own parameters, which the worker must fill), always."""
    target = _annotated(fn)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(target, "__globals__", {})
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return hints
    for param in signature.parameters.values():
        annotation = param.annotation
        if not isinstance(annotation, str):
            if annotation is not inspect.Parameter.empty:
                hints[param.name] = annotation
            continue
        try:
            hints[param.name] = eval(annotation, dict(namespace))
        except Exception as exc:
            if strict or "Depends" in annotation:
                raise DependencyError(
                    f"{what}: the annotation of parameter {param.name!r} ({annotation}) cannot "
                    f"be evaluated ({exc}); define what it names at module level, or use the "
                    "`= Depends(...)` default form"
                ) from None
    return hints


def _marker_of_param(param: inspect.Parameter, hint: Any) -> Dependency | None:
    found: Dependency | None = None
    if typing.get_origin(hint) is typing.Annotated:
        for meta in hint.__metadata__:
            found = marker_of(meta) or found
    default = marker_of(param.default) if param.default is not inspect.Parameter.empty else None
    found = default or found
    if found is not None and found.dependency is None:
        target = hint.__origin__ if typing.get_origin(hint) is typing.Annotated else hint
        if not callable(target) or target is Any:
            raise DependencyError(
                f"parameter {param.name!r} has Depends() without a function and no class "
                "annotation to call; pass the function: Depends(get_value)"
            )
        found = Dependency(target, found.use_cache)
    return found


def _is_context(hint: Any) -> bool:
    if typing.get_origin(hint) is typing.Annotated:
        hint = hint.__origin__
    return hint is JobContext


class _Planner:
    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self.nodes: dict[tuple[Callable[..., Any], bool], _Node] = {}
        self.path: list[Callable[..., Any]] = []

    def node(self, dep: Dependency) -> _Node:
        call = dep.dependency
        assert call is not None
        key = (call, dep.use_cache)
        known = self.nodes.get(key)
        if known is not None:
            return known
        if call in self.path:
            loop = " -> ".join(_name(f) for f in [*self.path[self.path.index(call) :], call])
            raise DependencyError(
                f"task {self.task_name!r}: its dependencies form a cycle ({loop}); a "
                "dependency cannot depend, directly or not, on itself"
            )
        self.path.append(call)
        try:
            params = self.params(call, f"dependency {_name(call)} of task {self.task_name!r}")
        finally:
            self.path.pop()
        node = _Node(call, _name(call), _kind(call), params, dep.use_cache)
        self.nodes[key] = node
        return node

    def params(self, call: Callable[..., Any], what: str) -> tuple[_Edge, ...]:
        try:
            signature = inspect.signature(call)
        except (TypeError, ValueError) as exc:
            raise DependencyError(f"{what}: its signature cannot be read ({exc})") from None
        hints = param_hints(call, what, strict=True)
        out: list[_Edge] = []
        for param in signature.parameters.values():
            hint = hints.get(param.name, Any)
            marker = _marker_of_param(param, hint)
            if marker is not None:
                self._keyword_usable(param, what)
                out.append((param.name, self.node(marker)))
            elif _is_context(hint):
                self._keyword_usable(param, what)
                out.append((param.name, _CONTEXT))
            elif param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            elif param.default is inspect.Parameter.empty:
                raise DependencyError(
                    f"{what}: parameter {param.name!r} has no Depends(...), no JobContext "
                    "annotation and no default, so the worker has nothing to pass it"
                )
        return tuple(out)

    @staticmethod
    def _keyword_usable(param: inspect.Parameter, what: str) -> None:
        if param.kind is param.POSITIONAL_ONLY:
            raise DependencyError(
                f"{what}: parameter {param.name!r} is positional-only; the worker passes "
                "dependencies by name, so drop the `/` before it"
            )


class TaskDependencies:
    """The dependency graph of one task, read at decoration and resolved per job."""

    def __init__(self, task_name: str, params: Mapping[str, _Node]) -> None:
        self.task_name = task_name
        self.params = dict(params)
        self.names = frozenset(self.params)
        self.wants_context = any(_wants_context(node) for node in self.params.values())

    def __bool__(self) -> bool:
        return bool(self.params)

    async def resolve(
        self,
        stack: contextlib.AsyncExitStack,
        context: JobContext | None,
        in_thread: InThread,
        given: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The task's dependency values for one job; ``yield`` dependencies are entered on
        ``stack``, which the caller closes when the job ends (with its exception, if any).
        ``given`` holds values passed explicitly (an inline call), which are not resolved."""
        cache: dict[Callable[..., Any], Any] = {}
        values: dict[str, Any] = {}
        for name, node in self.params.items():
            if given is not None and name in given:
                continue
            values[name] = await self._solve(node, stack, context, in_thread, cache)
        return values

    async def _solve(
        self,
        node: _Node,
        stack: contextlib.AsyncExitStack,
        context: JobContext | None,
        in_thread: InThread,
        cache: dict[Callable[..., Any], Any],
    ) -> Any:
        if node.use_cache and node.call in cache:
            return cache[node.call]
        kwargs: dict[str, Any] = {}
        for name, sub in node.params:
            if isinstance(sub, _Context):
                kwargs[name] = context
            else:
                kwargs[name] = await self._solve(sub, stack, context, in_thread, cache)
        try:
            value = await _call(node, kwargs, stack, in_thread)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            raise DependencyFailed(node.name, exc) from exc
        if node.use_cache:
            cache[node.call] = value
        return value


def _wants_context(node: _Node) -> bool:
    return any(isinstance(sub, _Context) or _wants_context(sub) for _, sub in node.params)


async def _call(
    node: _Node, kwargs: dict[str, Any], stack: contextlib.AsyncExitStack, in_thread: InThread
) -> Any:
    if node.kind == "async":
        return await node.call(**kwargs)
    if node.kind == "sync":
        return await in_thread(node.call, **kwargs)
    if node.kind == "async_gen":
        acm = contextlib.asynccontextmanager(node.call)(**kwargs)
        value = await acm.__aenter__()

        async def close_async(kind: Any, error: Any, tb: Any) -> bool:
            await _close(node, error, acm.__aexit__(kind, error, tb))
            return False

        stack.push_async_exit(close_async)
        return value
    cm = contextlib.contextmanager(node.call)(**kwargs)
    value = await in_thread(cm.__enter__)

    async def close_sync(kind: Any, error: Any, tb: Any) -> bool:
        await _close(node, error, in_thread(cm.__exit__, kind, error, tb))
        return False

    stack.push_async_exit(close_sync)
    return value


async def _close(node: _Node, error: BaseException | None, closing: Awaitable[Any]) -> None:
    """Close a ``yield`` dependency with the job's exception thrown in at its ``yield``.

    The job's exception goes on whatever the dependency does with it (returning ``False``
    from the exit callback): a dependency that swallowed it must not turn a failed job into
    a success with no result. One it raises in its place names the dependency."""
    try:
        await closing
    except BaseException as exc:
        if exc is error or isinstance(exc, _PASS_THROUGH):
            raise
        if not isinstance(exc, Exception):
            raise
        raise DependencyFailed(node.name, exc) from exc


def plan(fn: Callable[..., Any], task_name: str) -> TaskDependencies:
    """Read ``fn``'s dependency graph; raises ``DependencyError`` naming what is wrong."""
    planner = _Planner(task_name)
    what = f"task {task_name!r}"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return TaskDependencies(task_name, {})
    hints = param_hints(fn, what, strict=False)
    has_var_positional = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    params: dict[str, _Node] = {}
    for param in signature.parameters.values():
        marker = _marker_of_param(param, hints.get(param.name, Any))
        if marker is None:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise DependencyError(f"{what}: *{param.name} cannot be a dependency")
        planner._keyword_usable(param, what)
        if has_var_positional and param.kind is param.POSITIONAL_OR_KEYWORD:
            raise DependencyError(
                f"{what}: dependency parameter {param.name!r} comes before *args; make it "
                "keyword-only by moving it after *args"
            )
        planner.path.append(fn)
        try:
            params[param.name] = planner.node(marker)
        finally:
            planner.path.pop()
    return TaskDependencies(task_name, params)
