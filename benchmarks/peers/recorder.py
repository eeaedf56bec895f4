"""Completion and start-time records that cost no Redis command and the same for every library.

Every benchmark task calls `hit(enqueued_at)` once. It writes into a file that the harness
and all worker processes map into memory (`mmap`, `MAP_SHARED`): no syscall per job, no
thread, no Redis traffic, so a library's own command counts and CPU stay its own.

Layout: a 64-byte header whose first word is the number of slots handed out, then one slot
per process that runs jobs. A process takes its slot under `flock` on its first job. A slot:
jobs done (u64), wall time of the first start (f64), wall time of the last completion (f64),
pid (u64), then up to `LAGS` enqueue -> start lags (f64 seconds) for the latency figures.

RQ runs each job in a forked child that exits after it (`os._exit`, so no buffer would be
flushed): its worker calls `claim()` before it forks, and the children write into the
parent's slot, one at a time as RQ runs them. Every other fork starts without a slot.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "PEERS_RECORD"
HEADER = 64
SLOT_HEAD = 64
LAGS = 2048  # the latency figure uses 1,000 jobs; one process may run all of them
SLOT = SLOT_HEAD + 8 * LAGS
SLOTS = 64  # processes that may run jobs in one worker set (2 here; forks per job reuse one)
SIZE = HEADER + SLOT * SLOTS

_HEAD = struct.Struct("<QddQ")
_LAG = struct.Struct("<d")


def create(path: Path) -> None:
    """A zeroed record file for one set of worker processes."""
    with path.open("wb") as f:
        f.truncate(SIZE)


class _Slot:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, SIZE)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                (index,) = struct.unpack_from("<Q", self.map, 0)
                if index >= SLOTS:
                    raise RuntimeError(f"more than {SLOTS} processes ran jobs")
                struct.pack_into("<Q", self.map, 0, index + 1)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        self.offset = HEADER + index * SLOT
        self.lock = threading.Lock()
        _HEAD.pack_into(self.map, self.offset, 0, 0.0, 0.0, os.getpid())

    def hit(self, enqueued_at: float) -> None:
        now = time.time()
        with self.lock:
            done, first, _, pid = _HEAD.unpack_from(self.map, self.offset)
            if done < LAGS:
                _LAG.pack_into(self.map, self.offset + SLOT_HEAD + 8 * done, now - enqueued_at)
            _HEAD.pack_into(self.map, self.offset, done + 1, first or now, now, pid)


_slot: _Slot | None = None
_slot_lock = threading.Lock()


def claim() -> None:
    """Take this process's slot now, so that forked children write into it (RQ)."""
    global _slot
    path = os.environ.get(ENV)
    with _slot_lock:
        if _slot is None and path:
            _slot = _Slot(path)


def _drop_slot() -> None:
    global _slot, _slot_lock
    _slot_lock = threading.Lock()
    if os.environ.get("PEERS_RECORD_INHERIT") != "1":
        _slot = None


os.register_at_fork(after_in_child=_drop_slot)


def hit(enqueued_at: float) -> None:
    """Count one job as started (and, for a no-op, done); `enqueued_at` is `time.time()`."""
    if _slot is None:
        claim()
    if _slot is not None:
        _slot.hit(enqueued_at)


@dataclass
class Snapshot:
    done: int
    first: float
    last: float
    slots: int
    lags: list[float]


class Reader:
    """The harness's view of a record file (reads shared memory only)."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    def _slots(self) -> int:
        taken: int = struct.unpack_from("<Q", self.map, 0)[0]
        return min(taken, SLOTS)

    def done(self) -> int:
        return sum(
            struct.unpack_from("<Q", self.map, HEADER + i * SLOT)[0] for i in range(self._slots())
        )

    def snapshot(self, lags: bool = False) -> Snapshot:
        done = 0
        firsts: list[float] = []
        lasts: list[float] = []
        all_lags: list[float] = []
        slots = self._slots()
        for i in range(slots):
            offset = HEADER + i * SLOT
            n, first, last, _ = _HEAD.unpack_from(self.map, offset)
            done += n
            if n:
                firsts.append(first)
                lasts.append(last)
            if lags:
                count = min(n, LAGS)
                all_lags.extend(struct.unpack_from(f"<{count}d", self.map, offset + SLOT_HEAD))
        return Snapshot(done, min(firsts, default=0.0), max(lasts, default=0.0), slots, all_lags)

    def per_process(self) -> list[tuple[int, float, float]]:
        """Each process's (jobs done, first start, last completion), for processes that ran
        at least one job."""
        out = []
        for i in range(self._slots()):
            n, first, last, _ = _HEAD.unpack_from(self.map, HEADER + i * SLOT)
            if n:
                out.append((n, first, last))
        return out

    def pids(self) -> list[int]:
        """The processes that have taken a slot, in the order they took it."""
        return [
            struct.unpack_from("<Q", self.map, HEADER + i * SLOT + 24)[0]
            for i in range(self._slots())
        ]

    def reset(self) -> None:
        """Zero the counters of every slot (call only while no job runs)."""
        for i in range(self._slots()):
            offset = HEADER + i * SLOT
            pid = struct.unpack_from("<Q", self.map, offset + 24)[0]
            _HEAD.pack_into(self.map, offset, 0, 0.0, 0.0, pid)

    def close(self) -> None:
        self.map.close()
