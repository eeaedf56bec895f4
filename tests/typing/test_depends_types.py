"""Type-level tests of task dependencies: mypy --strict checks this file in CI.

What mypy leaves out of ``enqueue`` is a parameter with a default: ``= Depends(f)`` (typed
``Any``, as FastAPI's is) keeps the enqueue signature the caller's; ``Annotated[T,
Depends(f)]`` without a default works at run time, but mypy asks the caller for it.
"""

from __future__ import annotations

from typing import Annotated, assert_type

from offload import Depends, Job, Offload

jobs = Offload("memory://")


class Session:
    pass


async def get_session() -> Session:
    return Session()


@jobs.task
async def by_default(user_id: int, session: Session = Depends(get_session)) -> int:
    return user_id


@jobs.task
async def annotated_with_default(
    user_id: int, session: Annotated[Session, Depends(get_session)] = Depends(get_session)
) -> int:
    return user_id


@jobs.task
async def annotated_only(user_id: int, session: Annotated[Session, Depends(get_session)]) -> int:
    return user_id


@jobs.task
def sync_by_default(user_id: int, session: Session = Depends(get_session)) -> str:
    return str(user_id)


async def check() -> None:
    assert_type(await by_default.enqueue(user_id=1), Job[int])
    assert_type(await annotated_with_default.enqueue(1), Job[int])
    assert_type(sync_by_default.enqueue_sync(1), Job[str])
    assert_type(await by_default(1), int)
    # Without a default, mypy wants the dependency from the caller (who must not pass it).
    await annotated_only.enqueue(user_id=1)  # type: ignore[call-arg]
    # The value passed is still checked against the parameters the caller does pass.
    await by_default.enqueue(user_id="x")  # type: ignore[arg-type]


def test_module_imports() -> None:
    """The checks above live in ``check``; importing the module must not run them."""
    assert callable(check)
