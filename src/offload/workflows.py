"""Workflows: chains, groups and chords of task calls, stored as one graph (DESIGN §13).

``await chain(a.s(1), b.s()).enqueue()`` turns the calls into jobs with edges and stores
them in one atomic write; from then on the store alone moves the workflow on (a step
becomes runnable in the same atomic step as the success of its last input), so no process
has to stay alive for it, and a crash between two steps loses nothing.

The graph is built here, from the signatures, before anything is stored, so every call's
arguments are checked (and refused with ``TypeError``) first. A step that takes the result
before it is encoded without its first parameter, which the store fills in when it
releases the step (``stores.base.Takes``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from offload.canvas import Canvas, Chain, Group, Signature
from offload.errors import ConfigError
from offload.jobs import Job
from offload.stores.base import NewJob, StepLink, Takes, Workflows
from offload.tasks import Prepared, Task

__all__ = ["GATHER", "enqueue_workflow", "gather"]

# The built-in task that ends a workflow whose last part is a group: it returns the list
# of the group's results, so that the workflow, like a job, has one result.
GATHER = "offload.gather"


def gather(results: list[Any]) -> list[Any]:
    """The results of a group's members, in order, as one result."""
    return results


async def enqueue_workflow(app: Any, part: Canvas, key: str | None) -> Job[Any]:
    """Build ``part``'s graph (checking every call) and store it in one write."""
    graph = _Graph(app)
    exits, grouped = graph.add(part, None, False)
    if grouped or len(exits) != 1:
        exits = [graph.gather(exits)]
    return await graph.store(exits[0], key)


@dataclasses.dataclass(slots=True)
class _Node:
    id: str
    prepared: Prepared[Any]
    takes: Takes
    inputs: int
    feeds: list[tuple[str, int]] = dataclasses.field(default_factory=list)


class _Graph:
    """The workflow's steps in the order they are stored, with their edges."""

    def __init__(self, app: Any) -> None:
        self.nodes: list[_Node] = []
        self.handler: _Node | None = None
        self.app = app

    def add(
        self, part: Canvas, upstream: list[_Node] | None, grouped: bool
    ) -> tuple[list[_Node], bool]:
        """Add ``part`` after ``upstream`` (``grouped``: a group's several results, which
        the part gets as one list); returns the steps that end it, and whether they are a
        group's."""
        if isinstance(part, Signature):
            return [self.step(part, upstream, grouped)], False
        if isinstance(part, Chain):
            for step in part.steps:
                upstream, grouped = self.add(step, upstream, grouped)
            if part.handler is not None:
                self.set_handler(part.handler)
            assert upstream is not None
            return upstream, grouped
        assert isinstance(part, Group)
        exits: list[_Node] = []
        for member in part.members:
            ends, member_grouped = self.add(member, upstream, grouped)
            # A member with several results (a group of its own) keeps its own list.
            exits += [self.gather(ends)] if member_grouped or len(ends) != 1 else ends
        return exits, True

    def step(self, sig: Signature[Any], upstream: list[_Node] | None, grouped: bool) -> _Node:
        task = sig.task
        self.bind(task)
        if upstream is None or (grouped and not upstream and not sig.immutable):
            # First in its workflow, or after an empty group: all its arguments are here
            # (after an empty group, the empty list of that group's results comes first).
            args = sig.args if upstream is None or sig.immutable else ([], *sig.args)
            prepared = task._prepare(args, sig.kwargs, sig.opts)
            node = _Node(prepared.job.id, prepared, Takes.NONE, 0)
        else:
            takes = Takes.NONE if sig.immutable else Takes.ALL if grouped else Takes.ONE
            if takes is Takes.NONE:
                prepared = task._prepare(sig.args, sig.kwargs, sig.opts)
            else:
                prepared = task._prepare_piped(sig.args, sig.kwargs, sig.opts)
            node = _Node(prepared.job.id, prepared, takes, len(upstream))
            for slot, before in enumerate(upstream):
                before.feeds.append((node.id, slot))
        self.nodes.append(node)
        return node

    def gather(self, ends: list[_Node]) -> _Node:
        task = self.app.get_task(GATHER)
        return self.step(task.s(), ends, True)

    def set_handler(self, sig: Signature[Any]) -> None:
        if self.handler is not None:
            raise ValueError("a workflow takes one on_error handler; it was given two")
        self.bind(sig.task)
        prepared = sig.task._prepare_piped(sig.args, sig.kwargs, sig.opts)
        self.handler = _Node(prepared.job.id, prepared, Takes.ERROR, 1)

    def bind(self, task: Task[Any, Any]) -> None:
        if task.app is not self.app:
            raise ConfigError(
                f"task {task.name!r} belongs to another Offload app than the workflow's "
                "other steps; a workflow is stored in one app's store"
            )

    async def store(self, last: _Node, key: str | None) -> Job[Any]:
        app = self.app
        if not isinstance(app.store, Workflows):
            raise ConfigError(
                f"the {type(app.store).__name__} keeps no workflows (an optional store "
                "capability); use the SQLite, Redis or PostgreSQL store"
            )
        workflow = last.id
        handler = self.handler
        nodes = self.nodes if handler is None else [*self.nodes, handler]
        items: list[Prepared[Any]] = []
        for node in nodes:
            new: NewJob = node.prepared.job
            new.meta = {**new.meta, "workflow": workflow}
            new.step = StepLink(
                workflow,
                node.inputs,
                node.takes,
                tuple(node.feeds),
                None if handler is None or node is handler else handler.id,
            )
            if node is last:
                new.key = key if key is not None else new.key
            items.append(node.prepared)
        jobs: list[Job[Any]] = await app.enqueue_many(items)
        return jobs[nodes.index(last)]
