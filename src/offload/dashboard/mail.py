"""The mail page's source: the development sink's captured messages, from the sink object in
this process or from its JSON view (``offload mail-sink --http-port``) in another.

Messages are named by a hash of their bytes, not a position: the sink drops its oldest
messages past its bound, which would shift every position while a page is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from offload.email.sink import CapturedMessage, MailSink

__all__ = ["MailSource", "MailUnavailable", "Shown", "mail_source"]

# The sink runs on loopback; a slower answer means it is not there.
FETCH_TIMEOUT = 3.0


class MailUnavailable(Exception):
    """The sink could not be read; the page says why instead of failing."""


@dataclass(frozen=True, slots=True)
class Shown:
    id: str
    message: CapturedMessage


def _named(message: CapturedMessage) -> Shown:
    return Shown(hashlib.sha256(message.raw).hexdigest()[:20], message)


class MailSource:
    """Reads the captured mail, newest first."""

    def __init__(self, sink: MailSink | str) -> None:
        if isinstance(sink, str):
            url = sink.rstrip("/")
            self.url: str | None = url if url.endswith("/messages") else url + "/messages"
            self.sink: MailSink | None = None
        else:
            self.url = None
            self.sink = sink

    async def messages(self) -> list[Shown]:
        if self.sink is not None:
            found = list(self.sink.messages)
        else:
            found = await asyncio.to_thread(self._fetch)
        return [_named(m) for m in reversed(found)]

    async def get(self, message_id: str) -> Shown | None:
        return next((m for m in await self.messages() if m.id == message_id), None)

    def _fetch(self) -> list[CapturedMessage]:
        assert self.url is not None
        try:
            with urllib.request.urlopen(self.url, timeout=FETCH_TIMEOUT) as answer:
                data: Any = json.loads(answer.read().decode("utf-8"))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise MailUnavailable(f"the mail sink at {self.url} did not answer: {exc}") from exc
        if not isinstance(data, list):
            raise MailUnavailable(f"{self.url} did not answer with a list of messages")
        out = []
        for item in data:
            # The raw bytes carry everything (attachments included); parsing them again
            # gives the same view the sink itself has.
            parsed = CapturedMessage.parse(
                str(item.get("sender", "")),
                [str(r) for r in item.get("recipients", [])],
                str(item.get("raw", "")).encode("utf-8"),
            )
            received = item.get("received_at")
            if isinstance(received, str):
                with contextlib.suppress(ValueError):
                    parsed = replace(parsed, received_at=datetime.fromisoformat(received))
            out.append(parsed)
        return out


def mail_source(sink: MailSink | str | None) -> MailSource | None:
    return None if sink is None else MailSource(sink)
