"""``CancelSignals`` for the PostgreSQL store: a NOTIFY per cancel, heard by LISTEN.

The cancel statement notifies the store's channel, on commit, with the worker's id
(``listener.CANCEL_MARK``); the listener of the worker's process pokes that worker's watch,
which reads the worker's flagged jobs (``stores.cancels``). The notification only says
where to look, so one lost (the listener reconnecting) or never sent (``listen=false``, a
pooler in transaction mode) costs latency, not the request: while the listener is away
the watch reads every ``CANCEL_POLL_SECONDS`` (or the store's ``poll``, when shorter), and
a read follows every reconnection.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from psycopg.rows import TupleRow

from offload.stores.cancels import CancelWatch
from offload.stores.postgres.listener import CANCEL_MARK, Listener
from offload.stores.postgres.options import PostgresOptions

# How long a cancel may take to reach a worker whose process does not listen, at one read
# of its flagged jobs (from the running rows' partial index) per interval.
CANCEL_POLL_SECONDS = 0.5

Rows = Callable[[str, str, dict[str, Any]], Awaitable[list[TupleRow]]]


class Cancels:
    def __init__(
        self, opts: PostgresOptions, q: dict[str, str], listener: Listener, rows: Rows
    ) -> None:
        self._opts = opts
        self._q = q
        self._listener = listener
        self._rows = rows
        self._down = itertools.count()
        self._watch = CancelWatch(self._flagged, self._token, min(opts.poll, CANCEL_POLL_SECONDS))
        listener.on_cancel = self._watch.poke

    def params(self, job_id: str) -> dict[str, Any]:
        """The parameters of the ``cancel`` and ``cancel_notify_steps`` statements."""
        return {"id": job_id, "channel": self._opts.channel, "mark": CANCEL_MARK}

    def poke(self) -> None:
        """A cancel committed by this process: its own workers need not wait for the
        notification's trip through the server."""
        self._watch.poke()

    async def requests(self, worker_id: str, timeout: float) -> set[str]:
        await self._listener.start()
        return await self._watch.requests(worker_id, timeout)

    def _token(self) -> Hashable:
        """The same while one listening connection lasts; new at every look without one."""
        listener = self._listener
        return listener.generation if listener.connected else ("down", next(self._down))

    async def _flagged(self, worker_id: str) -> set[str]:
        rows = await self._rows(
            "reading cancel requests", self._q["cancel_flagged"], {"worker": worker_id}
        )
        return {str(r[0]) for r in rows}
