"""Job ids are UUIDv7 and sort in creation order."""

from __future__ import annotations

import time
import uuid

from offload.ids import new_id


class TestNewId:
    def test_version_and_order(self) -> None:
        """Ids are version-7 UUIDs, unique, and increase within a process."""
        ids = [new_id() for _ in range(20_000)]
        assert ids == sorted(ids)
        assert len(ids) == len(set(ids))
        assert {7} == {uuid.UUID(i).version for i in ids[:100]}

    def test_fields_across_milliseconds(self) -> None:
        """Each id carries the variant bits and its millisecond, however many share one."""
        before = time.time_ns() // 1_000_000
        ids = [new_id() for _ in range(10_000)]
        after = time.time_ns() // 1_000_000
        parsed = [uuid.UUID(i) for i in ids]
        assert [str(u) for u in parsed] == ids
        assert {uuid.RFC_4122} == {u.variant for u in parsed}
        stamps = [u.int >> 80 for u in parsed]
        assert before <= stamps[0]
        # A burst past 4,096 ids in one millisecond may run ahead of the clock, never behind.
        assert stamps[-1] <= after + len(ids) // 4096
        assert stamps == sorted(stamps)
