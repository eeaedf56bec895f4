"""Type-level tests of workflow signatures: mypy --strict checks this file in CI.

``task.s(...)`` takes either every argument (a first step, a group's member) or every
argument but the first (a step that gets the result before it); ``si`` takes them all.
"""

from __future__ import annotations

from typing import Any, assert_type

from offload import Chord, Group, Job, Offload, Signature, chain, chord, group

jobs = Offload("memory://")


@jobs.task
async def add(a: int, b: int = 0) -> int:
    return a + b


@jobs.task
async def total(numbers: list[int]) -> int:
    return sum(numbers)


async def checked() -> None:
    assert_type(add.s(1), Signature[int])
    assert_type(add.s(), Signature[int])  # the first argument comes from the step before
    assert_type(add.si(1, 2), Signature[int])
    assert_type(add.options(queue="fast").s(b=2), Signature[int])
    assert_type(add.map([1, 2, 3]), Group[int])
    assert_type(add.map([1, 2], b=5), Group[int])
    assert_type(chord(add.map([1, 2]), total.s()), Chord[int])
    workflow = chain(add.s(1), add.s(2), group(add.s(), add.s()), total.s())
    assert_type(await workflow.enqueue(key="k"), Job[Any])
    add.s("x")  # type: ignore[call-overload]
    add.s(1, 2, 3)  # type: ignore[call-overload]
    add.si()  # type: ignore[call-arg]
    chain(add.s(1), "not a step")  # type: ignore[arg-type]


def test_module_imports() -> None:
    """Importing the module builds the tasks; the checks above are mypy's."""
    assert add.name.endswith("add")
