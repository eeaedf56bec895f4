"""Time-ordered job ids (UUIDv7, RFC 9562), so ids sort by creation time in every store."""

from __future__ import annotations

import os
import threading
import time
import uuid

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
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0x2 << 62) | rand
    return str(uuid.UUID(int=value))
