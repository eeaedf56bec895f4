"""Turn an :class:`EmailMessage` into the MIME message that goes over SMTP."""

from __future__ import annotations

import email.policy
import email.utils
from datetime import UTC, datetime
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage as MimeMessage

from offload.email.errors import PermanentEmailError
from offload.email.html_text import html_to_text
from offload.email.message import DEFAULT_MAX_ATTACHMENT_BYTES, Address, EmailMessage

__all__ = ["build_mime"]


def _mailbox(address: Address) -> MimeAddress:
    # Built from the parts, not re-parsed: internationalised local parts are valid here
    # (they go out with SMTPUTF8) but the stdlib parser rejects them.
    username, _, domain = address.email.rpartition("@")
    return MimeAddress(display_name=address.name, username=username, domain=domain)


def build_mime(
    message: EmailMessage,
    *,
    sender: Address,
    message_id: str,
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
    date: datetime | None = None,
) -> MimeMessage:
    """Build the MIME message; Bcc recipients are left out of the headers (they only appear
    in the SMTP envelope), and an HTML-only message gets a derived text part."""
    mime = MimeMessage(policy=email.policy.SMTP)
    mime["From"] = _mailbox(sender)
    if message.to:
        mime["To"] = [_mailbox(a) for a in message.to]
    if message.cc:
        mime["Cc"] = [_mailbox(a) for a in message.cc]
    if message.reply_to:
        mime["Reply-To"] = [_mailbox(a) for a in message.reply_to]
    mime["Subject"] = message.subject
    mime["Date"] = email.utils.format_datetime(date or datetime.now(UTC))
    mime["Message-ID"] = message_id
    for name, value in message.headers.items():
        mime[name] = value
    _check_folding(mime)

    text = message.text if message.text is not None else html_to_text(message.html or "")
    mime.set_content(text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        mime.add_attachment(
            attachment.read(max_attachment_bytes),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )
    return mime


def _check_folding(mime: MimeMessage) -> None:
    """Last line of defence: no header may carry a line break once the stdlib has parsed it,
    whatever path the value took to get there."""
    for name, value in mime.items():
        if "\r" in str(value) or "\n" in str(value):
            raise PermanentEmailError(f"refusing to send: header {name} contains a line break")
