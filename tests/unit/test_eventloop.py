"""The precise-timer loop behaves as asyncio's own: I/O, timers, signals and many files.

How much closer to their deadline its timers fire is measured in benchmarks/, not here."""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from offload.eventloop import new_event_loop

pytestmark = pytest.mark.skipif(
    not hasattr(selectors, "EpollSelector"), reason="the precise loop needs epoll (Linux)"
)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


def test_a_timer_never_fires_early() -> None:
    async def main() -> list[float]:
        slept = []
        for delay in (0.0005, 0.003, 0.01, 0.0237):
            start = time.monotonic()
            await asyncio.sleep(delay)
            slept.append(time.monotonic() - start - delay)
        return slept

    assert all(extra >= -1e-6 for extra in run(main()))


def test_waits_of_a_quarter_second_or_more_go_to_epoll_alone_and_never_end_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Short waits are made with select() on the epoll descriptor for microsecond timeouts;
    a long one (a store's deadline seconds away) needs no such precision and skips it."""
    timeouts: list[float] = []
    real = select.select

    def spy(r: Any, w: Any, x: Any, timeout: float) -> Any:
        timeouts.append(timeout)
        return real(r, w, x, timeout)

    monkeypatch.setattr(select, "select", spy)

    async def main() -> float:
        await asyncio.sleep(0.01)
        start = time.monotonic()
        await asyncio.sleep(0.3)
        return time.monotonic() - start

    slept = run(main())
    assert slept >= 0.3 - 1e-6
    assert timeouts
    assert max(timeouts) < 0.25


def test_io_wakes_a_loop_that_waits_on_a_timer() -> None:
    async def main() -> bytes:
        a, b = socket.socketpair()
        with b:
            reader, writer = await asyncio.open_connection(sock=a)
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, b.send, b"ping")
            loop.call_later(30, lambda: None)  # a far timer: the wait has a deadline
            try:
                return await asyncio.wait_for(reader.readexactly(4), 10)
            finally:
                writer.close()
                await writer.wait_closed()

    assert b"ping" == run(main())


def test_a_signal_handler_runs_during_a_long_wait() -> None:
    async def main() -> None:
        got = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, got.set)
        loop.call_later(0.05, os.kill, os.getpid(), signal.SIGUSR1)
        try:
            await asyncio.wait_for(got.wait(), 10)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    run(main())


def test_past_select_s_descriptor_limit_it_waits_as_epoll_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Stands in for an epoll descriptor numbered above FD_SETSIZE, which select() refuses.
    def refuse(*_: Any) -> Any:
        raise ValueError("filedescriptor out of range in select()")

    monkeypatch.setattr(select, "select", refuse)

    async def main() -> bool:
        await asyncio.sleep(0.01)
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        return bool(selector._precise)

    assert run(main()) is False


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's per-thread timer slack")
def test_the_loop_s_thread_wakes_with_a_narrow_timer_slack() -> None:
    """Linux defers a sleeping thread's wake-up by up to 50 µs by default; the loop's thread
    and the threads it starts (the executor's) ask for 1 µs."""
    import ctypes
    import threading

    prctl = ctypes.CDLL(None).prctl
    seen: dict[str, int] = {}

    def slack() -> int:
        return int(prctl(30, 0, 0, 0, 0))  # PR_GET_TIMERSLACK: this thread's, in ns

    def on_a_fresh_thread() -> None:
        prctl(29, 50_000, 0, 0, 0)  # PR_SET_TIMERSLACK: the default, whatever ran before
        seen["before"] = slack()
        loop = new_event_loop()
        try:
            seen["loop"] = slack()
            seen["executor"] = loop.run_until_complete(loop.run_in_executor(None, slack))
        finally:
            loop.close()

    thread = threading.Thread(target=on_a_fresh_thread)
    thread.start()
    thread.join()
    assert seen["before"] == 50_000
    assert seen["loop"] == 1_000
    assert seen["executor"] == 1_000
