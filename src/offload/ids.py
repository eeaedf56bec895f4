"""Time-ordered job ids (UUIDv7, RFC 9562), so ids sort by creation time in every store."""

from __future__ import annotations

import os
import random
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_seq = 0
# The id's first 14 characters change once a millisecond, so they are formatted once each.
_prefix = ""
# The version digit and the 12-bit counter, with their dash: one lookup instead of a format.
_COUNTER = [f"7{i:03x}-" for i in range(4096)]
_VARIANT = 0x2 << 62


def new_id() -> str:
    """A UUIDv7 string, monotonic within this process.

    Within one millisecond a 12-bit counter keeps ids increasing, so jobs enqueued in one batch
    stay FIFO; past 4,096 ids in a millisecond the clock part is advanced by one.
    """
    global _last_ms, _seq, _prefix
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:
                _last_ms += 1
                _seq = 0
                _prefix = _format_ms(_last_ms)
        else:
            _last_ms = ms
            _seq = 0
            _prefix = _format_ms(ms)
        head = _prefix + _COUNTER[_seq]
    # Ids order and identify jobs; they are not secrets (every route that shows a job needs
    # credentials), so the fast non-cryptographic generator is enough.
    tail = f"{_VARIANT | _bits(62):016x}"
    return f"{head}{tail[:4]}-{tail[4:]}"


def _format_ms(ms: int) -> str:
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:]}-"


_bits = random.Random().getrandbits


def _reseed() -> None:
    # A forked child (gunicorn --preload, multiprocessing fork) would otherwise repeat its
    # parent's random sequence and could mint the same id in the same millisecond.
    global _bits
    _bits = random.Random().getrandbits


os.register_at_fork(after_in_child=_reseed)
