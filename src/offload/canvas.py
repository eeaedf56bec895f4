"""The parts of a workflow: signatures, chains, groups and chords (DESIGN §13).

They only describe the workflow: ``await part.enqueue()`` hands it to the app, which
builds the graph and stores it at once (``offload.workflows``). They sit beside the
task, below the app, so that ``task.s(...)`` needs nothing above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from offload.jobs import Job
    from offload.tasks import EnqueueOptions, Task

__all__ = ["Canvas", "Chain", "Chord", "Group", "Signature", "chain", "chord", "group"]

R = TypeVar("R")


class Canvas:
    """A part of a workflow: a signature, a chain, a group or a chord; parts nest."""

    async def enqueue(self, *, key: str | None = None) -> Job[Any]:
        """Store the whole workflow at once; returns the handle of its last step, whose
        ``result()`` is the workflow's (a chord's: its callback's; a group's: the list of
        its members' results) and whose ``steps()`` lists every step.

        ``key``: an idempotency key for the whole workflow; a call whose key is on record
        stores nothing and returns the workflow it names."""
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError("key must be a non-empty string")
        first = self.first()
        if first is None:
            raise ValueError(f"{self!r} holds no step to enqueue")
        return await first.task.app.enqueue_workflow(self, key=key)

    def first(self) -> Signature[Any] | None:
        """A signature of the part, for the app it belongs to."""
        if isinstance(self, Signature):
            return self
        parts = self.steps if isinstance(self, Chain) else getattr(self, "members", ())
        for part in parts:
            found = part.first()
            if found is not None:
                return found
        return None


class Signature(Canvas, Generic[R]):
    """One call of a task inside a workflow (``task.s(...)``, ``task.si(...)``). In a
    chain, the step after another gets that step's result as its first argument, unless
    the signature is immutable (``si``)."""

    __slots__ = ("args", "immutable", "kwargs", "opts", "task")

    def __init__(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opts: EnqueueOptions,
        *,
        immutable: bool = False,
    ) -> None:
        if opts.connection is not None:
            raise TypeError(
                "a workflow's step does not take the options' connection; workflows are "
                "stored on the store's own connection"
            )
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.opts = opts
        self.immutable = immutable

    def __repr__(self) -> str:
        mark = "si" if self.immutable else "s"
        return f"<Signature {self.task.name}.{mark}{self.args!r}{self.kwargs!r}>"

    def on_error(self, handler: Signature[Any]) -> Chain[R]:
        """This call as a workflow that runs ``handler`` if it fails."""
        return Chain((self,), on_error=handler)


class Chain(Canvas, Generic[R]):
    """Steps one after the other; each gets the previous one's result."""

    def __init__(self, steps: Sequence[Canvas], on_error: Signature[Any] | None = None) -> None:
        if not steps:
            raise ValueError("chain() needs at least one step")
        for step in steps:
            _check_part(step, "chain")
        if on_error is not None and not isinstance(on_error, Signature):
            raise TypeError(f"on_error must be a signature (task.s(...)), got {on_error!r}")
        self.steps = tuple(steps)
        self.handler = on_error

    def __repr__(self) -> str:
        return f"<Chain of {len(self.steps)}>"


class Group(Canvas, Generic[R]):
    """Members run in parallel; followed by a step (a chord), that step gets the list of
    their results, in the members' order."""

    def __init__(self, members: Iterable[Canvas]) -> None:
        self.members = tuple(members)
        for member in self.members:
            _check_part(member, "group")

    def __repr__(self) -> str:
        return f"<Group of {len(self.members)}>"


class Chord(Chain[R]):
    """A group and the callback that gets the list of its results."""

    def __init__(
        self, header: Group[Any], callback: Signature[R], on_error: Signature[Any] | None = None
    ) -> None:
        if not isinstance(header, Group):
            raise TypeError(f"chord() takes a group first, got {header!r}")
        if not isinstance(callback, Signature):
            raise TypeError(f"chord()'s callback must be a signature, got {callback!r}")
        super().__init__((header, callback), on_error)


def chain(*steps: Canvas, on_error: Signature[Any] | None = None) -> Chain[Any]:
    """Steps one after the other: ``chain(a.s(1), b.s(), c.s())`` runs ``c(b(a(1)))``."""
    return Chain(steps, on_error)


def group(*members: Canvas | Iterable[Canvas]) -> Group[Any]:
    """Members run in parallel: ``group(a.s(1), a.s(2))`` or ``group(a.s(n) for n in ns)``."""
    if len(members) == 1 and not isinstance(members[0], Canvas):
        return Group(members[0])
    return Group(members)  # type: ignore[arg-type]


def chord(
    header: Group[Any] | Iterable[Canvas],
    callback: Signature[R],
    *,
    on_error: Signature[Any] | None = None,
) -> Chord[R]:
    """``header``'s members in parallel, then ``callback`` with the list of their results."""
    return Chord(header if isinstance(header, Group) else Group(header), callback, on_error)


def _check_part(part: object, where: str) -> None:
    if not isinstance(part, Canvas):
        raise TypeError(
            f"{where}() takes signatures (task.s(...)), chains, groups and chords, got {part!r}"
        )
