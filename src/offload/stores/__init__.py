"""Job stores, chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from offload.errors import ConfigError
from offload.stores.base import (
    Activity,
    ChangeFeed,
    ClaimRequest,
    JobFilter,
    NewJob,
    Outcome,
    OutcomeKind,
    Page,
    ScheduleState,
    Store,
    WorkerInfo,
    WorkerRegistry,
)

ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, memory://, redis://host:6379/0, "
    "postgresql://user@host:5432/database"
)

__all__ = [
    "ACCEPTED",
    "Activity",
    "ChangeFeed",
    "ClaimRequest",
    "JobFilter",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "Page",
    "ScheduleState",
    "Store",
    "WorkerInfo",
    "WorkerRegistry",
    "open_store",
]


def open_store(url: str, clock: Callable[[], float] | None = None) -> Store:
    """Build (but do not connect) the store a URL names; raises ``ConfigError`` if malformed.

    ``clock`` (seconds since the epoch) replaces the system clock, for tests that move time
    by hand (``offload.testing.Clock``); only the in-process stores accept one, since a
    server's clock is shared by every process that uses it."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"invalid store URL {url!r}; accepted forms: {ACCEPTED}")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigError(
            f"invalid store URL {url!r} ({exc}); accepted forms: {ACCEPTED}"
        ) from None
    if scheme == "sqlite":
        from offload.stores.sqlite import SQLiteStore

        return SQLiteStore(url, clock=clock)
    if scheme == "memory":
        from offload.stores.memory import MemoryStore

        return MemoryStore(url, clock=clock)
    if clock is not None:
        raise ConfigError(
            f"a controllable clock works with memory:// and sqlite:/// stores, not {scheme}://"
        )
    if scheme in {"redis", "rediss"}:
        try:
            from offload.stores.redis import RedisStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                f"the Redis store is not available ({exc}); install offload[redis]"
            ) from None
        return RedisStore(url)  # type: ignore[no-any-return,unused-ignore]
    if scheme in {"postgresql", "postgres"}:
        try:
            from offload.stores.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                f"the PostgreSQL store is not available ({exc}); install offload[postgres]"
            ) from None
        return PostgresStore(url)  # type: ignore[no-any-return,unused-ignore]
    raise ConfigError(f"unknown store scheme {scheme!r} in {url!r}; accepted forms: {ACCEPTED}")
