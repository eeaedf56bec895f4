"""The SMTP client: sends an :class:`EmailMessage` and classifies every failure.

One connection per message keeps the client stateless between jobs (no pool to go stale
across worker restarts); mail volume from a job queue rarely makes the handshake the
bottleneck.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage as MimeMessage

import aiosmtplib
from pydantic import SecretStr

from offload.email.errors import (
    EmailError,
    PermanentEmailError,
    Refusal,
    TransientEmailError,
)
from offload.email.message import DEFAULT_MAX_ATTACHMENT_BYTES, Address, EmailMessage
from offload.email.message_id import random_message_id
from offload.email.mime import build_mime
from offload.email.settings import MailSettings, TLSMode
from offload.errors import ConfigError

__all__ = ["Mailer", "SendResult"]

logger = logging.getLogger("offload.email")

_DEFAULT_PORTS: Mapping[TLSMode, int] = {"implicit": 465, "starttls": 587, "none": 25}

_CREDENTIALS_HINT = (
    "the SMTP server refused the login; check OFFLOAD_SMTP_USERNAME and "
    "OFFLOAD_SMTP_PASSWORD (providers such as Gmail or Outlook need an app password "
    "rather than the account password, and may need SMTP access enabled)"
)


@dataclass(frozen=True)
class SendResult:
    """What the server accepted: some recipients may be refused while others get the mail."""

    message_id: str
    accepted: list[str]
    refused: dict[str, Refusal] = field(default_factory=dict)
    reply: str = ""

    def as_dict(self) -> dict[str, object]:
        """A JSON-able form, suitable as a job result."""
        return {
            "message_id": self.message_id,
            "accepted": list(self.accepted),
            "refused": {a: {"code": r.code, "reply": r.reply} for a, r in self.refused.items()},
            "reply": self.reply,
        }


class Mailer:
    """Sends messages through one SMTP server.

    Certificates are verified against the system CAs (or ``tls_context`` for a private CA);
    ``tls="none"`` exists for a local development sink and refuses to send a password.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | SecretStr | None = None,
        tls: TLSMode = "starttls",
        timeout: float = 30.0,
        sender: Address | str | None = None,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
    ) -> None:
        if tls not in _DEFAULT_PORTS:
            raise ConfigError(f"tls must be 'starttls', 'implicit' or 'none', not {tls!r}")
        if password is not None and username is None:
            raise ConfigError("a password was given without a username (OFFLOAD_SMTP_USERNAME)")
        if username is not None and tls == "none":
            raise ConfigError(
                "refusing to send SMTP credentials unencrypted; use tls='starttls' or "
                "'implicit' (OFFLOAD_SMTP_TLS)"
            )
        self.host = host
        self.port = port if port is not None else _DEFAULT_PORTS[tls]
        self.username = username
        self._password = SecretStr(password) if isinstance(password, str) else password
        self.tls: TLSMode = tls
        self.timeout = timeout
        self.sender = Address.model_validate(sender) if sender is not None else None
        self.tls_context = tls_context
        self.local_hostname = local_hostname
        self.max_attachment_bytes = max_attachment_bytes

    @classmethod
    def from_settings(cls, settings: MailSettings | None = None) -> Mailer:
        """A mailer configured from ``OFFLOAD_SMTP_*`` (read now unless ``settings`` given)."""
        s = settings if settings is not None else MailSettings()
        context = ssl.create_default_context(cafile=s.ca_file) if s.ca_file else None
        return cls(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            tls=s.tls,
            timeout=s.timeout,
            sender=s.sender,
            tls_context=context,
            max_attachment_bytes=s.max_attachment_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"Mailer(host={self.host!r}, port={self.port!r}, username={self.username!r}, "
            f"password={'**********' if self._password else None}, tls={self.tls!r})"
        )

    async def send(self, message: EmailMessage, *, message_id: str | None = None) -> SendResult:
        """Send ``message``; raise :class:`TransientEmailError` or
        :class:`PermanentEmailError` unless at least one recipient accepted it.

        Pass ``message_id`` (see :func:`make_message_id`) so that retries of one job send the
        same Message-ID.
        """
        sender = message.sender or self.sender
        if sender is None:
            raise ConfigError(
                "the message has no sender; set EmailMessage.sender or OFFLOAD_SMTP_SENDER"
            )
        message_id = message_id or random_message_id(sender.domain)
        mime = build_mime(
            message,
            sender=sender,
            message_id=message_id,
            max_attachment_bytes=self.max_attachment_bytes,
        )
        recipients = message.recipients
        log_extra = {"message_id": message_id, "recipients": len(recipients), "host": self.host}
        try:
            refused, reply = await self._deliver(mime, sender.email, recipients)
        except EmailError as exc:
            logger.warning(
                "email not sent: %s",
                exc,
                extra={"action": "email.failed", "code": exc.code, **log_extra},
            )
            raise
        result = SendResult(
            message_id=message_id,
            accepted=[r for r in recipients if r not in refused],
            refused=refused,
            reply=reply,
        )
        logger.info(
            "email sent",
            extra={"action": "email.sent", "refused": len(refused), **log_extra},
        )
        return result

    async def _deliver(
        self, mime: MimeMessage, sender: str, recipients: list[str]
    ) -> tuple[dict[str, Refusal], str]:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.tls == "implicit",
            start_tls=self.tls == "starttls",
            validate_certs=True,
            tls_context=self.tls_context,
            local_hostname=self.local_hostname,
            username=self.username,
            password=self._password.get_secret_value() if self._password else None,
        )
        try:
            await client.connect()
            errors, reply = await client.send_message(mime, sender=sender, recipients=recipients)
        except Exception as exc:
            client.close()
            raise _classify(exc) from exc
        except BaseException:  # cancelled: drop the connection, keep the cancellation
            client.close()
            raise
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            # The message is already accepted; a failed goodbye must not make a job resend it.
            client.close()
        refused = {addr: Refusal(r.code, r.message) for addr, r in errors.items()}
        return refused, reply


def _classify(exc: Exception) -> EmailError:
    """Map an aiosmtplib (or socket) failure to transient or permanent."""
    if isinstance(exc, EmailError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = {e.recipient: Refusal(e.code, e.message) for e in exc.recipients}
        permanent = all(r.permanent for r in refused.values())
        detail = "; ".join(f"{a}: {r.code} {r.reply}" for a, r in refused.items())
        first = next(iter(refused.values()), Refusal(0, ""))
        error_type = PermanentEmailError if permanent else TransientEmailError
        return error_type(
            f"the server refused every recipient: {detail}",
            code=first.code,
            reply=first.reply,
            refused=refused,
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        if exc.code >= 500:
            return PermanentEmailError(
                f"{_CREDENTIALS_HINT}; server replied {exc.code} {exc.message}",
                code=exc.code,
                reply=exc.message,
            )
        return TransientEmailError(
            f"the server could not check the login now: {exc.code} {exc.message}",
            code=exc.code,
            reply=exc.message,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        error_type = PermanentEmailError if exc.code >= 500 else TransientEmailError
        return error_type(
            f"the server replied {exc.code} {exc.message}", code=exc.code, reply=exc.message
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return TransientEmailError(f"the SMTP server timed out: {exc}")
    if _certificate_failure(exc):
        return PermanentEmailError(
            f"the SMTP server's TLS certificate could not be verified ({exc}); check "
            f"OFFLOAD_SMTP_HOST, or set OFFLOAD_SMTP_CA_FILE for a private CA"
        )
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return TransientEmailError(f"could not talk to the SMTP server: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        # SMTPNotSupported and friends: the server lacks a feature (STARTTLS, AUTH, SMTPUTF8)
        # that the settings or message need; retrying does not add it.
        return PermanentEmailError(f"the SMTP server cannot send this message: {exc}")
    if isinstance(exc, ValueError):
        # aiosmtplib refuses an address it cannot put on the wire; the message must change.
        return PermanentEmailError(f"the message cannot be sent: {exc}")
    return TransientEmailError(f"sending failed: {type(exc).__name__}: {exc}")


def _certificate_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
