"""The service's own data, through SQLAlchemy 2 (async): users, orders, uploads, payments.

The same ``get_session`` serves the endpoints (FastAPI resolves it per request) and the
tasks (offload's worker resolves it per job): a ``yield`` dependency, so the session is
closed when the request or the job ends, also when it fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from fastapi import Depends
from sqlalchemy import JSON, ForeignKey, String, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from examples.notify.settings import Settings, get_settings


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "notify_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Order(Base):
    __tablename__ = "notify_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    total_cents: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="created")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(default=None)
    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order", cascade="all, delete-orphan", lazy="selectin"
    )


class OrderItem(Base):
    __tablename__ = "notify_order_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("notify_orders.id"))
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int]
    unit_price_cents: Mapped[int]
    order: Mapped[Order] = relationship(back_populates="items")


class Upload(Base):
    """A file or an image handed in; what became of it is its job's state."""

    __tablename__ = "notify_uploads"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "csv" or "image"
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int]
    job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PaymentEvent(Base):
    """A provider's event, once processed: a redelivery finds it here and does nothing."""

    __tablename__ = "notify_payment_events"
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    order_id: Mapped[int]
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Stats(Base):
    """The cached summary that ``GET /stats`` serves, rebuilt by the cache-refresh job."""

    __tablename__ = "notify_stats"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    body: Mapped[dict[str, Any]]
    built_at: Mapped[datetime] = mapped_column(default=utcnow)


class Database:
    """One engine per URL and process, its tables created on first use (the web process and
    every worker process may be the first)."""

    def __init__(self) -> None:
        self._engines: dict[str, AsyncEngine] = {}
        self._ready: dict[str, asyncio.Lock] = {}
        self._created: set[str] = set()

    async def engine(self, url: str) -> AsyncEngine:
        engine = self._engines.get(url)
        if engine is None:
            engine = self._engines[url] = _make_engine(url)
        if url not in self._created:
            lock = self._ready.setdefault(url, asyncio.Lock())
            async with lock:
                if url not in self._created:
                    async with engine.begin() as conn:
                        await conn.run_sync(Base.metadata.create_all)
                    self._created.add(url)
        return engine

    async def dispose(self) -> None:
        engines, self._engines = self._engines, {}
        self._created.clear()
        self._ready.clear()
        for engine in engines.values():
            await engine.dispose()


def _make_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database:
        from pathlib import Path

        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # The web process and worker processes write the same file: WAL lets readers on while
    # one writes, and the timeout makes a writer wait for the other instead of failing.
    # One connection, shared in turn: SQLite takes one writer at a time, and writers that
    # meet its lock back off by sleeping (1 ms, 2 ms, ... 100 ms), which under load costs
    # far more than waiting in the pool's queue for the connection.
    engine = create_async_engine(
        url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=30
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


database = Database()


async def get_session(
    settings: Annotated[Settings, Depends(get_settings)],
) -> AsyncIterator[AsyncSession]:
    engine = await database.engine(settings.db_url)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def same_postgres(store_url: str, db_url: str) -> bool:
    """Whether the job store and the service's data are one PostgreSQL database, so that an
    order and its confirmation job can commit in one transaction."""
    try:
        store, data = make_url(store_url), make_url(db_url)
    except Exception:
        return False
    if store.get_backend_name() != "postgresql" or data.get_backend_name() != "postgresql":
        return False
    if data.get_driver_name() != "psycopg":
        return False
    port = 5432
    return (store.host, store.port or port, store.database) == (
        data.host,
        data.port or port,
        data.database,
    )
