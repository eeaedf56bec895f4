"""A mail sink that misbehaves on purpose, for testing how senders handle failures.

Use it in your own tests to check that a job retries a busy server and gives up on a
refused address::

    async with FaultySink(port=0, fail_first=2, fail_reply="451 4.3.0 busy") as sink:
        ...
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from offload.email.sink import DEFAULT_MAX_MESSAGES, MailSink, _Handler

__all__ = ["FaultySink"]

Stage = Literal["mail", "rcpt", "data"]


class _FaultyHandler(_Handler):
    sink: FaultySink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> object:
        self.sink.transactions += 1
        if self.sink.fail_at == "mail" and self.sink._take_failure():
            return self.sink.fail_reply
        return MISSING

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> object:
        reply = self.sink.refuse.get(address)
        if reply is not None:
            return reply
        if self.sink.fail_at == "rcpt" and self.sink._take_failure():
            return self.sink.fail_reply
        return MISSING

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.fail_at == "data" and self.sink._take_failure():
            return self.sink.fail_reply
        return await super().handle_DATA(server, session, envelope)


class FaultySink(MailSink):
    """A :class:`MailSink` with scripted failures.

    - ``fail_first=n``: the first ``n`` transactions get ``fail_reply`` at stage ``fail_at``
      (``"mail"``, ``"rcpt"`` or ``"data"``, the reply to the final dot); later ones succeed.
    - ``refuse={"a@example.com": "550 5.1.1 no such user"}``: that recipient is always
      refused with that reply.
    - ``drop_in_data=n``: for the first ``n`` transactions, close the connection after the
      first line of message data, without a reply.

    ``transactions`` counts the MAIL commands seen; ``failures_left`` what remains scripted.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        *,
        fail_first: int = 0,
        fail_reply: str = "451 4.3.0 Temporary failure, try again later",
        fail_at: Stage = "mail",
        refuse: Mapping[str, str] | None = None,
        drop_in_data: int = 0,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        folder: str | Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        auth: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            max_messages=max_messages,
            folder=folder,
            tls_context=tls_context,
            implicit_tls=implicit_tls,
            auth=auth,
        )
        self.failures_left = fail_first
        self.fail_reply = fail_reply
        self.fail_at: Stage = fail_at
        self.refuse = dict(refuse or {})
        self.drops_left = drop_in_data
        self.transactions = 0

    def _take_failure(self) -> bool:
        if self.failures_left > 0:
            self.failures_left -= 1
            return True
        return False

    def _take_drop(self) -> bool:
        if self.drops_left > 0:
            self.drops_left -= 1
            return True
        return False

    def handler(self) -> object:
        return _FaultyHandler(self)

    def smtp_class(self) -> type[SMTP]:
        sink = self

        class DroppingSMTP(SMTP):
            async def smtp_DATA(self, arg: str) -> None:
                if not sink._take_drop():
                    await super().smtp_DATA(arg)
                    return
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await self._reader.readline()
                assert self.transport is not None
                self.transport.close()

        return DroppingSMTP
