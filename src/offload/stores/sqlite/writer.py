"""The SQLite writer thread: owns the connection and runs queued operations in grouped
transactions (group commit), so a burst of enqueues, claims and completions pays one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from offload.errors import StoreUnavailable
from offload.stores.sqlite.queries import QUERIES
from offload.stores.sqlite.schema import check_version, migrate

# How long a write waits for another process's transaction before giving up. Long enough to
# ride out a checkpoint, short enough that a wedged file surfaces as StoreUnavailable.
LOCK_WAIT_SECONDS = 30.0
# SQLite's own busy handler sleeps whole milliseconds and grows to 100 ms; our own retry
# starts at 50 µs, which matters when two workers and a producer take turns thousands of
# times a second. Another process's batch holds the lock for about a millisecond, so for
# the first LOCK_RETRY_PATIENCE the pause stays short: a 2 ms pause there left each of two
# draining workers asleep for a third of the run with the lock free (drain of 60,000 no-op
# jobs: 13,400-13,700 jobs/s against 16,300-16,900 with this pacing). A writer that holds
# the lock longer (a purge, a foreign tool) is then polled at the slower pace.
LOCK_RETRY_FIRST = 0.00005
LOCK_RETRY_FAST_MAX = 0.0003
LOCK_RETRY_PATIENCE = 0.02
LOCK_RETRY_MAX = 0.002
# Operations grouped into one transaction at most; bounds the time the write lock is held.
MAX_BATCH = 512
# WAL checkpoints run on their own thread and connection (see Checkpointer), at most this
# often while writes go on. SQLite's automatic checkpoint stays as a backstop at a size the
# checkpointer never lets the log reach unless it has stopped.
CHECKPOINT_EVERY = 0.05
BACKSTOP_PAGES = 20_000

_WAL = QUERIES["wal"]
_FOREIGN_KEYS = QUERIES["foreign_keys"]
_AUTOCHECKPOINT = QUERIES["wal_autocheckpoint"].format(pages=BACKSTOP_PAGES)
_NO_BUSY_TIMEOUT = QUERIES["no_busy_timeout"]
_CHECKPOINT = QUERIES["checkpoint"]
# One statement per level, composed once: a batch switches between the URL's level and
# normal (see Writer.run_batch).
_SYNCHRONOUS = {
    level: QUERIES["synchronous"].format(level=level.upper())
    for level in ("full", "extra", "normal")
}


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out another process that opens the same new file.

    Changing the journal mode needs the file to itself, and SQLite answers "database is
    locked" at once, without its busy handler, while another process is switching or
    migrating it; two workers started together on a new file met that.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    pause = 0.001
    while True:
        try:
            conn.execute(_WAL)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class Op:
    __slots__ = ("durable", "fn", "future", "loop", "write")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        write: bool,
        durable: bool,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.write = write
        self.durable = durable


def _deliver(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class Checkpointer(threading.Thread):
    """Copies the WAL back into the database file off the writer's path.

    With SQLite's automatic checkpoint, the commit that crosses the threshold does the copy and
    an fsync of the database file itself, so every dozenth enqueue waits several times longer
    than the rest. A PASSIVE checkpoint on another connection blocks neither writers nor
    readers, and SQLite releases the GIL while it copies.
    """

    def __init__(self, path: str) -> None:
        super().__init__(name=f"offload-sqlite-checkpoint:{path}", daemon=True)
        self.path = path
        self.wrote = threading.Event()
        self.stopping = False

    def kick(self) -> None:
        self.wrote.set()

    def stop(self) -> None:
        self.stopping = True
        self.wrote.set()
        self.join()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self.wrote.wait()
                if self.stopping:
                    return
                self.wrote.clear()
                # Busy means another process's checkpointer holds the lock: its copy serves.
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute(_CHECKPOINT).fetchall()
                time.sleep(CHECKPOINT_EVERY)
        finally:
            conn.close()


class Writer(threading.Thread):
    """Owns the connection; runs queued operations in grouped transactions."""

    def __init__(self, path: str, synchronous: str) -> None:
        super().__init__(name=f"offload-sqlite:{path}", daemon=True)
        self.path = path
        # Lowered once: the URL accepts any case, and the level keys _SYNCHRONOUS.
        self.synchronous = synchronous.lower()
        self.ops: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.startup_error: BaseException | None = None
        self.current_sync = self.synchronous
        self.checkpointer = Checkpointer(path)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_SECONDS
        )
        try:
            # First, so that a file of a newer layout is left exactly as it was found.
            check_version(conn)
            _switch_to_wal(conn)
            conn.execute(_SYNCHRONOUS[self.synchronous])
            conn.execute(_FOREIGN_KEYS)
            conn.execute(_AUTOCHECKPOINT)
            migrate(conn)
            # From here on, lock waits are ours (see LOCK_RETRY_FIRST).
            conn.execute(_NO_BUSY_TIMEOUT)
        except BaseException:
            conn.close()
            raise
        return conn

    def run(self) -> None:
        try:
            conn = self.connect()
        except BaseException as exc:
            self.startup_error = exc
            self.ready.set()
            return
        self.checkpointer.start()
        self.ready.set()
        try:
            self.serve(conn)
        finally:
            self.checkpointer.stop()
            conn.close()

    def serve(self, conn: sqlite3.Connection) -> None:
        ops = self.ops
        while True:
            first = ops.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = ops.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self.run_batch(conn, batch)
            if stop:
                return

    def run_batch(self, conn: sqlite3.Connection, batch: list[Op]) -> None:
        write = any(op.write for op in batch)
        if write:
            # Only acceptance (enqueue, cancel, retry by hand) must survive power loss; a lost
            # claim or completion only means the job runs again, which at-least-once allows.
            # In WAL mode NORMAL still survives a crash of the process, and the next FULL
            # commit makes every earlier one durable too.
            wanted = self.synchronous if any(op.durable for op in batch) else "normal"
            if wanted != self.current_sync:
                conn.execute(_SYNCHRONOUS[wanted])
                self.current_sync = wanted
        began = time.monotonic()
        deadline = began + LOCK_WAIT_SECONDS
        pause = LOCK_RETRY_FIRST
        while True:
            try:
                results = self.transaction(conn, batch, write)
                if write:
                    self.checkpointer.kick()
                break
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not _is_busy(exc) or time.monotonic() > deadline:
                    error: BaseException = (
                        StoreUnavailable(f"SQLite file {self.path} stayed locked: {exc}")
                        if _is_busy(exc)
                        else StoreUnavailable(f"SQLite error on {self.path}: {exc}")
                    )
                    results = [(op.future, None, error) for op in batch]
                    break
                time.sleep(pause * (0.5 + random.random()))
                patient = time.monotonic() - began < LOCK_RETRY_PATIENCE
                pause = min(pause * 2, LOCK_RETRY_FAST_MAX if patient else LOCK_RETRY_MAX)
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for op, result in zip(batch, results, strict=True):
            by_loop.setdefault(op.loop, []).append(result)
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop closed; nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, items)

    @staticmethod
    def transaction(
        conn: sqlite3.Connection, batch: list[Op], write: bool
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        single = len(batch) == 1
        for op in batch:
            if single:
                try:
                    results.append((op.future, op.fn(conn), None))
                except sqlite3.OperationalError as exc:
                    if _is_busy(exc):
                        raise
                    results.append((op.future, None, exc))
                except Exception as exc:
                    results.append((op.future, None, exc))
                continue
            conn.execute("SAVEPOINT op")
            try:
                value = op.fn(conn)
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise
                conn.execute("ROLLBACK TO op")
                results.append((op.future, None, exc))
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                results.append((op.future, None, exc))
            else:
                results.append((op.future, value, None))
            conn.execute("RELEASE op")
        if single and results[0][2] is not None and write:
            conn.execute("ROLLBACK")
        else:
            conn.execute("COMMIT")
        return results


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text
