"""The reference service under uvicorn, in a process of its own, refuses bodies over its limit
while holding no more of them than the limit: what a server process holds while a client sends
it 100 MB (its peak memory is read from ``/proc`` before and after). What
``BodySizeLimitMiddleware`` decides is tested in process, in tests/unit/test_body_limit.py."""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.notify_server import Server, notify_server

MB = 1_000_000
# Growth of the server's peak memory allowed while it refuses a 100 MB body. Reading the body
# whole costs several times its size (the bytes, the parsed JSON, the error echoing it).
ALLOWED_GROWTH_MIB = 16


def post_chunked(port: int, total: int) -> tuple[int, bytes]:
    """Send a JSON registration of ``total`` bytes chunked, stopping as soon as the server
    answers; returns the bytes sent and the answer."""
    head = (
        "POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + b'25\r\n{"email": "a@example.com", "name": "x\r\n')
        try:
            while sent < total:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:  # the server has answered: the rest would not be read
                    break
                sock.sendall(frame)
                sent += len(piece)
            else:
                sock.sendall(b'2\r\n"}\r\n0\r\n\r\n')
        except OSError:  # the server closed the connection while we were sending
            pass
        return sent, read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:  # reset after the answer, for the unread body the server dropped
        pass
    return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with notify_server(tmp_path_factory.mktemp("limits")) as running:
        yield running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
class TestServerMemory:
    def test_a_100_mb_chunked_body_is_refused_holding_no_more_than_the_limit(
        self, server: Server
    ) -> None:
        before = server.peak_rss_kib()
        sent, answer = post_chunked(server.port, 100 * MB)
        growth_mib = (server.peak_rss_kib() - before) / 1024
        print(f"100 MB chunked body: {sent:,} bytes sent, peak RSS +{growth_mib:.1f} MiB")
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert b"over the limit of 1,048,576 bytes" in answer
        # The client stopped when the answer came: the kernel's buffers, not the body.
        assert sent < 20 * MB
        assert growth_mib < ALLOWED_GROWTH_MIB

    def test_a_declared_100_mb_body_is_refused_before_it_is_sent(self, server: Server) -> None:
        before = server.peak_rss_kib()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
            )
            answer = read_answer(sock)
        growth_mib = (server.peak_rss_kib() - before) / 1024
        print(f"declared 100 MB body: peak RSS +{growth_mib:.1f} MiB")
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert b"connection: close" in answer.lower()
        assert growth_mib < ALLOWED_GROWTH_MIB

    def test_the_limit_is_a_setting_of_the_service(self, tmp_path: Path) -> None:
        with notify_server(tmp_path, NOTIFY_MAX_BODY_BYTES="64") as small:
            body = {"email": "ada@example.com", "name": "Ada Lovelace " * 4}
            response = httpx.post(f"{small.base_url}/register", json=body)
            assert 413 == response.status_code
            assert "over the limit of 64 bytes" in response.json()["detail"]
            fits = httpx.post(f"{small.base_url}/register", json={**body, "name": "Ada"})
            assert 202 == fits.status_code, fits.text
