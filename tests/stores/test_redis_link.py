"""The Redis store's hot-path connection (``offload.stores.redis.link.Link``).

Replies, error replies and pipelining run against the real server. What a healthy Redis never
does (hang up mid-reply, answer a command twice, report that it is still loading) comes from a
small RESP server on loopback that answers redis-py's handshake and then follows a script.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import hiredis
import pytest
from redis.asyncio import ConnectionPool
from redis.exceptions import BusyLoadingError, InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from offload.stores.redis.link import Link
from tests.stores.conftest import REDIS_URL, redis_unreachable


def pack(*commands: tuple[object, ...]) -> bytes:
    return b"".join(hiredis.pack_command(c) for c in commands)  # type: ignore[arg-type]


async def open_link(url: str) -> tuple[Link, ConnectionPool]:
    pool = ConnectionPool.from_url(url, decode_responses=True)
    return await Link.open(pool.make_connection()), pool  # type: ignore[no-untyped-call]


@pytest.fixture
async def real() -> AsyncIterator[Link]:
    try:
        link, _ = await open_link(REDIS_URL)
    except (RedisConnectionError, OSError) as exc:
        redis_unreachable(exc)
    try:
        yield link
    finally:
        await link.aclose()


async def test_replies_come_back_in_order_with_error_replies_as_values(real: Link) -> None:
    replies = await real.exchange(
        pack(("PING",), ("EVALSHA", "0" * 40, 0), ("ECHO", "é"), ("NOT-A-COMMAND",)), 4
    )
    assert replies[0] == "PONG"
    assert isinstance(replies[1], NoScriptError)
    assert replies[2] == "é"
    assert isinstance(replies[3], ResponseError)
    assert "unknown command" in str(replies[3])
    # The link stays usable after error replies.
    assert await real.exchange(pack(("PING",)), 1) == ["PONG"]
    assert not real.broken


async def test_a_large_pipelined_exchange_arrives_whole(real: Link) -> None:
    payload = "x" * 100_000
    replies = await real.exchange(pack(*[("ECHO", payload)] * 50), 50)
    assert replies == [payload] * 50


async def test_a_cancelled_exchange_closes_the_link(real: Link) -> None:
    task = asyncio.ensure_future(real.exchange(pack(("BLPOP", "offload-test-link-never", 5)), 1))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert real.broken
    with pytest.raises(RedisConnectionError):
        await real.exchange(pack(("PING",)), 1)


# --- a scripted server for what a healthy Redis never does -------------------------------------

Script = Callable[[list[str], asyncio.StreamWriter], bool]
"""Answers one command after the handshake; returns False to hang up instead."""


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            parser = hiredis.Reader(encoding="utf-8")
            try:
                while data := await reader.read(65536):
                    parser.feed(data)
                    while (command := parser.gets()) is not False:
                        name = command[0].upper()
                        if name in {"CLIENT", "SELECT", "HELLO", "AUTH"}:
                            writer.write(b"+OK\r\n")
                        elif not script(command, writer):
                            writer.close()
                            return
                    await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def starter(script: Script) -> asyncio.Future[str]:
        return asyncio.ensure_future(start(script))

    yield starter
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_server_that_hangs_up_mid_exchange_fails_it(
    scripted: Callable[[Script], asyncio.Future[str]],
) -> None:
    def first_then_hang_up(command: list[str], writer: asyncio.StreamWriter) -> bool:
        if command[0] == "ECHO":
            writer.write(b"+first\r\n")
            return True
        return False

    link, _ = await open_link(await scripted(first_then_hang_up))
    with pytest.raises(RedisConnectionError, match="closed"):
        await link.exchange(pack(("ECHO", "a"), ("PING",)), 2)
    assert link.broken


@pytest.mark.parametrize("stray", [b"+PONG\r\n", b"+PO"], ids=["whole", "part"])
async def test_a_reply_nobody_asked_for_breaks_the_link(
    scripted: Callable[[Script], asyncio.Future[str]], stray: bytes
) -> None:
    """A whole unrequested reply, or the start of one, in the same read as the wanted one:
    either would otherwise meet the next exchange."""

    def answer_and_more(command: list[str], writer: asyncio.StreamWriter) -> bool:
        writer.write(b"+PONG\r\n" + stray)
        return True

    link, _ = await open_link(await scripted(answer_and_more))
    with pytest.raises(InvalidResponse, match="no command asked for"):
        await link.exchange(pack(("PING",)), 1)
    assert link.broken


async def test_a_server_still_loading_raises_for_a_retry(
    scripted: Callable[[Script], asyncio.Future[str]],
) -> None:
    def loading(command: list[str], writer: asyncio.StreamWriter) -> bool:
        writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")
        return True

    link, _ = await open_link(await scripted(loading))
    # A connection error (redis-py's kind), so the store's retry policy sends it again.
    with pytest.raises(BusyLoadingError):
        await link.exchange(pack(("PING",)), 1)
    assert link.broken


async def test_links_the_server_closed_while_idle_are_skipped_without_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a restart or a client timeout every idle connection is dead; the next call
    opens a fresh one at once instead of failing on each dead one and backing off."""
    import redis.asyncio

    from offload.stores.redis import connection as redis_conn
    from offload.stores.redis import faults

    conn = redis_conn.RedisConnection(f"{REDIS_URL}?prefix=test-link-idle&op_timeout=2")
    try:
        await conn.open()
    except Exception as exc:
        redis_unreachable(exc)
    admin = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await asyncio.gather(
            *(conn.run([("BLPOP", "test-link-idle:none", 0.05)]) for _ in range(6))
        )
        idle = list(conn._idle)
        assert len(idle) == 6
        for link in idle:
            host, port = link._transport.get_extra_info("sockname")[:2]
            await admin.client_kill(f"{host}:{port}")
        await asyncio.sleep(0.1)  # the loop sees each connection close
        assert all(link.broken for link in idle)

        retries: list[Exception] = []

        async def count(error: Exception) -> None:
            retries.append(error)

        monkeypatch.setattr(faults, "_dropped", count)
        assert await conn.run([("PING",)]) == ["PONG"]
        assert retries == []
        assert len(conn._idle) == 1
    finally:
        await admin.aclose()
        await conn.close()
