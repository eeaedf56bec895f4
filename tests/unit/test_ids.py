"""Job ids are UUIDv7 and sort in creation order."""

from __future__ import annotations

import uuid

from offload.ids import new_id


class TestNewId:
    def test_version_and_order(self) -> None:
        """Ids are version-7 UUIDs, unique, and increase within a process."""
        ids = [new_id() for _ in range(20_000)]
        assert ids == sorted(ids)
        assert len(ids) == len(set(ids))
        assert {7} == {uuid.UUID(i).version for i in ids[:100]}
