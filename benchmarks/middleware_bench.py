"""What ``RequestLogMiddleware`` adds to a request, measured in-process through ASGI.

Run: ``.venv/bin/python -m benchmarks.middleware_bench`` (``--requests N``, ``--rounds R``).
Prints one Markdown table.

Two FastAPI apps with the same endpoint (``GET /items/{item_id}`` returning a small JSON
object), one with the middleware and one without, are called directly as ASGI callables, so
no server, socket or HTTP parsing is timed. Calls alternate between the two apps in rounds so
that drift on a shared machine hits both alike; the figure is the difference of the per-call
medians. The middleware runs in three set-ups: its log line filtered out (level WARNING), its
line rendered as JSON by ``configure_logging`` to ``/dev/null``, and the same with a
``traceparent`` header to validate.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from typing import Any, TextIO

from fastapi import FastAPI

from offload.fastapi import RequestLogMiddleware
from offload.logging import configure_logging

Message = dict[str, Any]

DEFAULT_REQUESTS = 20_000
DEFAULT_ROUNDS = 10


def build(with_middleware: bool) -> FastAPI:
    app = FastAPI()
    if with_middleware:
        app.add_middleware(RequestLogMiddleware)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def scope_for(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/7",
        "raw_path": b"/items/7",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"svc"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Message) -> None:
    return None


async def time_calls(app: Any, headers: list[tuple[bytes, bytes]], n: int) -> list[float]:
    out = []
    perf = time.perf_counter
    for _ in range(n):
        scope = scope_for(headers)
        start = perf()
        await app(scope, receive, send)
        out.append(perf() - start)
    return out


async def compare(
    headers: list[tuple[bytes, bytes]], requests: int, rounds: int
) -> tuple[float, float]:
    plain, logged = build(False), build(True)
    await time_calls(plain, headers, 500)  # warm-up: route compilation, caches
    await time_calls(logged, headers, 500)
    base: list[float] = []
    with_mw: list[float] = []
    per_round = max(1, requests // rounds)
    for _ in range(rounds):
        base += await time_calls(plain, headers, per_round)
        with_mw += await time_calls(logged, headers, per_round)
    return statistics.median(with_mw) - statistics.median(base), statistics.median(base)


async def main(requests: int, rounds: int, devnull: TextIO) -> None:
    root = logging.getLogger()
    rows = []
    rid = [(b"x-request-id", b"bench-request-0001")]
    root.setLevel(logging.WARNING)
    rows.append(("log line filtered out (level WARNING)", *await compare(rid, requests, rounds)))
    configure_logging(json=True, level="INFO", stream=devnull)
    rows.append(("JSON log line to /dev/null", *await compare(rid, requests, rounds)))
    tp = (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    rows.append(("JSON log line, with traceparent", *await compare([*rid, tp], requests, rounds)))
    print(f"{requests} requests per app and set-up, {rounds} alternating rounds\n")
    print("| set-up | app alone p50 | added by the middleware, p50 |")
    print("|---|---|---|")
    for label, added, base in rows:
        print(f"| {label} | {base * 1e6:.1f} µs | {added * 1e6:.1f} µs |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    ns = parser.parse_args()
    with open(os.devnull, "w") as null:
        asyncio.run(main(ns.requests, ns.rounds, null))
