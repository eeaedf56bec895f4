"""Redis refusing connections: the first call of an outage answers within ``REFUSED_WINDOW``
(not after the whole ``op_timeout``), the calls after it at once, both with a message that
says the connection was refused; a server back within the window is ridden out, and the
first call that gets through ends the outage."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from offload import Offload
from offload.errors import StoreUnavailable
from offload.stores.redis.faults import REFUSED_WINDOW
from tests.stores.conftest import OwnRedis

REFUSED = "did not answer: it refused the connection"
# A loaded 2-core machine's scheduling noise, over what each wait should take.
SLACK = 0.5


@pytest.fixture
async def add(own_redis: OwnRedis) -> AsyncIterator[Any]:
    """A task of an app open on a Redis of the test's own."""
    # op_timeout well above the window, so that an answer within the window is the policy's.
    app = Offload(own_redis.url.replace("op_timeout=3", "op_timeout=10"), embedded_worker=False)

    @app.task(name="tests.add")
    async def adder(x: int, y: int) -> int:
        return x + y

    async with app:
        yield adder


async def _enqueue(add: Any) -> float:
    began = time.monotonic()
    await add.enqueue(1, 2)
    return time.monotonic() - began


async def _refused(add: Any) -> float:
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match=REFUSED) as caught:
        await add.enqueue(1, 2)
    assert "redis-server is running" in str(caught.value)
    return time.monotonic() - began


def _refused_sync(add: Any) -> float:
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match=REFUSED):
        add.enqueue_sync(1, 2)
    return time.monotonic() - began


async def test_a_refused_connection_answers_promptly_then_at_once(
    add: Any, own_redis: OwnRedis
) -> None:
    await _enqueue(add)
    own_redis.crash()
    first = await _refused(add)
    assert first < REFUSED_WINDOW + SLACK
    later = [await _refused(add) for _ in range(20)]
    assert max(later) < 0.1, later
    own_redis.start()
    await _enqueue(add)  # the outage ends with the first call that gets through
    own_redis.crash()
    assert await _refused(add) < REFUSED_WINDOW + SLACK  # a new outage: retried again


def test_the_blocking_path_answers_promptly_too(add: Any, own_redis: OwnRedis) -> None:
    add.enqueue_sync(1, 2)
    own_redis.crash()
    assert _refused_sync(add) < REFUSED_WINDOW + SLACK
    later = [_refused_sync(add) for _ in range(20)]
    assert max(later) < 0.1, later


async def test_a_server_back_within_the_window_is_ridden_out(add: Any, own_redis: OwnRedis) -> None:
    await _enqueue(add)
    own_redis.crash()
    restarter = threading.Timer(0.2, own_redis.start)
    restarter.start()
    try:
        await _enqueue(add)  # retried with backoff until the server answers
    finally:
        restarter.join()
