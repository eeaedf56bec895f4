"""Time-ordered job ids (UUIDv7, RFC 9562), so ids sort by creation time in every store."""

from __future__ import annotations

import os
import random
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    """A UUIDv7 string, monotonic within this process.

    Within one millisecond a 12-bit counter keeps ids increasing, so jobs enqueued in one batch
    stay FIFO; past 4,096 ids in a millisecond the clock part is advanced by one.
    """
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = 0
        seq = _seq
    # Ids order and identify jobs; they are not secrets (every route that shows a job needs
    # credentials), so the fast non-cryptographic generator is enough.
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0x2 << 62) | _bits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_bits = random.Random().getrandbits


def _reseed() -> None:
    # A forked child (gunicorn --preload, multiprocessing fork) would otherwise repeat its
    # parent's random sequence and could mint the same id in the same millisecond.
    global _bits
    _bits = random.Random().getrandbits


os.register_at_fork(after_in_child=_reseed)
