"""The conformance suite's tests of the change feed (``ChangeFeed``), an optional capability:
a store without it skips them, and the dashboard's live view then redraws on a timer. Every
store offload ships has it. ``StoreConformance`` inherits them; see
``offload.testing.conformance``.

The contract lets a token move when nothing visible changed (a server store may see other
writes), so these tests check only that every change of state moves it, and that a wait
ends by its timeout when nothing moves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from offload.stores.base import ChangeFeed, ClaimRequest, Store
from offload.testing.inputs import TTL, done, new_job

# Generous: the stores read their token every fraction of a second, and a slow machine must
# not fail a test that only asks whether the token moved.
_WAIT = 5.0


def feed(store: Store) -> ChangeFeed:
    if not isinstance(store, ChangeFeed):
        pytest.skip(
            f"{type(store).__name__} has no change feed (changes): an optional capability, "
            "so the dashboard's live view redraws on a timer instead"
        )
    return store


async def _moved(store: Store, change: Callable[[], Awaitable[object]]) -> bool:
    changes = feed(store)
    before = await changes.changes(None, 0)
    await change()
    return before != await changes.changes(before, _WAIT)


@pytest.mark.asyncio
class ChangeFeedConformance:
    """Every change of state moves the token; an idle wait ends by its timeout."""

    async def test_a_first_read_answers_at_once(self, store: Store) -> None:
        changes = feed(store)
        token = await asyncio.wait_for(changes.changes(None, 60), _WAIT)
        assert isinstance(token, str)
        assert token
        assert isinstance(await changes.changes("not a token of this store", 60), str)

    async def test_an_idle_wait_ends_by_its_timeout(self, store: Store) -> None:
        changes = feed(store)
        token = await changes.changes(None, 0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        again = await asyncio.wait_for(changes.changes(token, 0.3), _WAIT)
        elapsed = loop.time() - started
        assert isinstance(again, str)
        if again == token:
            assert elapsed >= 0.25, "a wait that saw no change must last its timeout"

    async def test_enqueue_claim_and_finish_each_move_it(self, store: Store) -> None:
        new = new_job()
        assert await _moved(store, lambda: store.enqueue([new]))
        assert await _moved(store, lambda: store.claim(ClaimRequest("w", TTL, 1, None)))
        assert await _moved(store, lambda: store.complete([done(new.id, "w")]))

    async def test_operator_actions_move_it(self, store: Store) -> None:
        new = new_job(delay=3600)
        await store.enqueue([new])
        assert await _moved(store, lambda: store.cancel(new.id))
        assert await _moved(store, lambda: store.retry(new.id))
        await store.cancel(new.id)
        assert await _moved(store, lambda: store.delete(new.id))

    async def test_a_waiting_reader_wakes_on_a_write(self, store: Store) -> None:
        """A wait begun before the write returns with a new token, well before its
        timeout: the live view redraws when something happened."""
        changes = feed(store)
        token = await changes.changes(None, 0)
        waiter = asyncio.ensure_future(changes.changes(token, 60))
        await asyncio.sleep(0.05)
        await store.enqueue([new_job()])
        assert token != await asyncio.wait_for(waiter, _WAIT)
