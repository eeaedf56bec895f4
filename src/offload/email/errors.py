"""Email failures, split by what a job should do about them.

A job that sends mail retries a :class:`TransientEmailError` and gives up at once on a
:class:`PermanentEmailError`: retrying a refused address or bad credentials only repeats the
refusal, while a busy or unreachable server usually recovers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from offload.errors import OffloadError

__all__ = [
    "AttachmentTooLarge",
    "EmailError",
    "PermanentEmailError",
    "Refusal",
    "TemplateError",
    "TransientEmailError",
]


@dataclass(frozen=True)
class Refusal:
    """A server's refusal of one recipient: the reply code and the server's text."""

    code: int
    reply: str

    @property
    def permanent(self) -> bool:
        """5xx replies say "do not try again"; 4xx replies say "try again later"."""
        return self.code >= 500


class EmailError(OffloadError):
    """Sending an email failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        code: int | None = None,
        reply: str = "",
        refused: Mapping[str, Refusal] | None = None,
    ) -> None:
        self.code = code
        self.reply = reply
        self.refused: dict[str, Refusal] = dict(refused or {})
        super().__init__(message)


class TransientEmailError(EmailError):
    """The mail server could not take the message now (unreachable, timed out or a 4xx reply);
    sending it again later may succeed."""


class PermanentEmailError(EmailError):
    """The mail server refused the message (a 5xx reply); sending it again will not help
    until the message or the settings change."""


class AttachmentTooLarge(PermanentEmailError):
    """An attachment is larger than the configured limit (max_attachment_bytes)."""


class TemplateError(EmailError):
    """An email template could not be rendered; the message names the template and the cause."""
