"""The live view's wait for a change: a long poll on the store's change feed.

An open page asks ``live/changes?since=TOKEN`` and gets its answer when the feed's token
moves, or after ``FEED_WAIT`` with nothing new; only then does it fetch its fragments again.
So an idle dashboard costs the store one cheap token read a fraction of a second apart per
open page, and a busy one a redraw at most every 2 seconds, instead of counts and lists read
on a timer. A long poll rather than a server-sent event stream: every request ends within
``FEED_WAIT``, so a server shutting down (or reloading in development) never waits on an
open tab for longer than that.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from offload.stores.base import ChangeFeed, Store

__all__ = ["FEED_WAIT", "MAX_TOKEN", "Change", "wait_for_change"]

FEED_WAIT = 3.0
# A store without a feed: the page redraws on this timer, as it would by polling.
TIMER = 2.0
# Tokens are short (a counter or a digest); anything longer did not come from us.
MAX_TOKEN = 64


@dataclass(frozen=True, slots=True)
class Change:
    token: str
    changed: bool


async def wait_for_change(store: Store, since: str | None) -> Change:
    """The feed's token once it differs from ``since``; ``changed`` is False when the wait
    ran out first. Without a feed, a change on the timer."""
    if since is not None and len(since) > MAX_TOKEN:
        since = None
    if not isinstance(store, ChangeFeed):
        await asyncio.sleep(TIMER)
        return Change("", True)
    token = await store.changes(since, FEED_WAIT)
    return Change(token, token != since)
