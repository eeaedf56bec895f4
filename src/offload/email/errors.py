"""Email failures, split by what a job should do about them.

A job that sends mail retries a :class:`TransientEmailError` and gives up at once on a
:class:`PermanentEmailError`: retrying a refused address or bad credentials only repeats the
refusal, while a busy or unreachable server usually recovers. :data:`PERMANENT_ERRORS` is the
whole set a mail-sending task should give up on at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from offload.errors import ConfigError, OffloadError

__all__ = [
    "PERMANENT_ERRORS",
    "AttachmentTooLarge",
    "EmailError",
    "InvalidMessage",
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


class InvalidMessage(PermanentEmailError):
    """The message cannot be built from the values given (a header value with a line break,
    an address that does not parse); the same values fail the same way on every attempt."""


class AttachmentTooLarge(PermanentEmailError):
    """An attachment is larger than the configured limit (max_attachment_bytes)."""


class TemplateError(EmailError):
    """An email template could not be rendered; the message names the template and the cause."""


PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    PermanentEmailError,
    TemplateError,
    ConfigError,
    ValidationError,
)
"""What a task that sends mail should fail on at the first attempt (``give_up_on=``): the
server's 5xx refusals, a template that does not render, missing settings, and a message whose
values do not validate (a name with a line break, say). Retrying repeats the same answer."""
