"""One connection of the Redis store's hot path, read by an asyncio protocol.

redis-py opens the connection (DNS, TCP or TLS, AUTH, SELECT, CLIENT SETINFO) and then hands
its transport to ``Link``, which parses replies with hiredis as they arrive and wakes the
caller once, when the last reply of its exchange is in. redis-py's stream reader costs a
read call, a loop iteration and several frames per reply on top of that: on a local server
that was a quarter of a round trip (a ``PING`` took about 80 µs through it, 63 µs here).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers import BaseParser
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.connection import AbstractConnection as SyncConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ReadOnlyError

_CLOSED = "Connection closed by server."
_STRAY = "a reply arrived that no command asked for"


def screened(replies: list[Any], close: Callable[[], None]) -> list[Any]:
    """An exchange's replies, once the ones that condemn its connection have closed it.

    A reply meaning the connection is unusable (a server still loading its data set) is
    raised, as redis-py would. A read-only refusal (a failover made the server a replica)
    goes to the caller, and the connection is not used again (see RedisConnection._exchange).
    """
    for reply in replies:
        if isinstance(reply, RedisConnectionError):
            close()
            raise reply
        if isinstance(reply, ReadOnlyError):
            close()
    return replies


class Link(asyncio.Protocol):
    """Request-reply over one connection, one exchange at a time.

    A link that met anything unexpected (a lost connection, a cancelled exchange, a reply
    nobody asked for) is closed and never reused, so a reply can never reach the wrong caller.
    """

    def __init__(self, conn: AbstractConnection, transport: asyncio.Transport) -> None:
        # The redis-py connection owns the transport's life (``disconnect`` closes it) and
        # keeps its stream objects alive while the transport is in use.
        self._conn = conn
        self._transport = transport
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            encoding=conn.encoder.encoding if conn.encoder.decode_responses else None,
            errors=conn.encoder.encoding_errors,
        )
        self._replies: list[Any] = []
        self._want = 0
        self._waiter: asyncio.Future[list[Any]] | None = None
        self.broken = False

    @classmethod
    async def open(cls, conn: AbstractConnection) -> Link:
        """Connect ``conn`` (redis-py does the handshake) and take over its transport."""
        await conn.connect()  # type: ignore[no-untyped-call]
        # The one way to reach the transport redis-py opened (its stream writer's).
        writer = conn._writer
        if writer is None:  # pragma: no cover - connect() either sets it or raises
            raise RedisConnectionError("the connection did not open")
        transport = writer.transport
        link = cls(conn, transport)  # type: ignore[arg-type]
        transport.set_protocol(link)
        return link

    async def exchange(self, packed: bytes, count: int) -> list[Any]:
        """Write ``packed`` (``count`` commands) and return their replies in order.

        Error replies come back as values (``ResponseError`` and its kinds, such as
        ``NoScriptError``); a reply that means the connection is unusable (a server still
        loading its data set) is raised, as redis-py would."""
        if self.broken:
            raise RedisConnectionError(_CLOSED)
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiter, self._want, self._replies = waiter, count, []
        try:
            self._transport.write(packed)
            replies = await waiter
        except BaseException:
            self.close()
            raise
        return screened(replies, self.close)

    def close(self) -> None:
        self.broken = True
        # redis-py's own silent close: the transport, and its record of it (else it warns of
        # an unclosed connection when collected).
        self._conn._close()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        self.broken = True
        await self._conn.disconnect(nowait=True)

    # --- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: even a partial reply is out of step
            self._fail(InvalidResponse(_STRAY))
            return
        reader = self._reader
        reader.feed(data)
        replies = self._replies
        try:
            while len(replies) < self._want:
                reply = reader.gets()
                if reply is False:
                    return
                replies.append(reply)
            stray = reader.gets()
        except InvalidResponse as exc:
            self._fail(exc)
            return
        # (A stray reply cut short in this read would otherwise meet the next exchange.)
        if stray is not False or reader.has_data():
            self._fail(InvalidResponse(_STRAY))
            return
        waiter, self._waiter, self._want = self._waiter, None, 0
        if waiter is not None and not waiter.done():
            waiter.set_result(replies)

    def eof_received(self) -> bool | None:
        self._fail(RedisConnectionError(_CLOSED))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(_CLOSED if exc is None else f"{_CLOSED} ({exc})"))

    def _fail(self, exc: Exception) -> None:
        self.broken = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()


class BlockingLink:
    """``Link``'s counterpart for callers outside the event loop (``enqueue_sync``).

    A blocking socket read by hiredis: a thread that waits on ``recv`` wakes straight into
    the reply, where the loop's path costs a selector pass, a callback and a task step on
    each side of the round trip. That difference alone (about 15 µs a round trip here) is
    what a blocking caller such as a sync endpoint would otherwise pay for nothing. Used by
    one thread at a time; closed, never reused, after anything unexpected.
    """

    def __init__(self, conn: SyncConnection) -> None:
        conn.connect()  # type: ignore[no-untyped-call]
        sock: socket.socket | None = conn._sock
        if sock is None:  # pragma: no cover - connect() either sets it or raises
            raise RedisConnectionError("the connection did not open")
        self._conn: SyncConnection = conn
        self._sock: socket.socket = sock
        self._reader: hiredis.Reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            encoding=conn.encoder.encoding if conn.encoder.decode_responses else None,
            errors=conn.encoder.encoding_errors,
        )
        self.broken: bool = False

    def exchange(self, packed: bytes, count: int) -> list[Any]:
        """As ``Link.exchange``; a socket timeout (``socket_timeout``) raises ``TimeoutError``."""
        if self.broken:
            raise RedisConnectionError(_CLOSED)
        reader, sock = self._reader, self._sock
        replies: list[Any] = []
        try:
            sock.sendall(packed)
            while len(replies) < count:
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise RedisConnectionError(_CLOSED)
                    reader.feed(data)
                else:
                    replies.append(reply)
            if reader.has_data():
                raise InvalidResponse(_STRAY)
        except BaseException:
            self.close()
            raise
        return screened(replies, self.close)

    def close(self) -> None:
        self.broken = True
        self._conn.disconnect()  # type: ignore[no-untyped-call]


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's Python packer, which costs tens
    of microseconds for a script call with a batch of arguments."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # "SCRIPT LOAD" is two words on the wire
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class FastConnection(_HiredisPacking, Connection):
    pass


class FastSSLConnection(_HiredisPacking, SSLConnection):
    pass


def connection_class(url: str) -> type[Connection]:
    return FastSSLConnection if url.startswith("rediss:") else FastConnection
