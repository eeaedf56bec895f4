"""Turn an :class:`EmailMessage` into the MIME message that goes over SMTP.

The headers built from the message's own text (subject, the address headers, custom headers)
are written in their wire form here rather than by the stdlib's folding, which re-splits
text at every kind of Unicode space (U+00A0 included) when it mixes encoded words with plain
ones, and loses or moves the spaces around them. Here a header is either plain ASCII text
folded only at its own spaces and tabs, or RFC 2047 encoded words holding the exact text:
a reader shows what was sent, character for character.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage as MimeMessage
from email.policy import EmailPolicy, Policy

from offload.email.errors import PermanentEmailError
from offload.email.html_text import html_to_text
from offload.email.message import DEFAULT_MAX_ATTACHMENT_BYTES, Address, EmailMessage

__all__ = ["build_mime", "encode_header"]

# RFC 5322 asks for lines of at most 78 characters and forbids more than 998.
_LINE = 78
# A plain token longer than this goes out encoded instead, so that no line passes 998.
_LONGEST_PLAIN = 900
# 39 bytes of UTF-8 make 52 characters of base64 and, with "=?utf-8?b?" and "?=", an encoded
# word of 64 (RFC 2047 allows 75): a line holding one after a header name of up to 12
# characters ("Subject:", "Reply-To:") stays within 78.
_WORD_BYTES = 39

_PLAIN = re.compile(r"[\t -~]*")
_TOKENS = re.compile(r"[ \t]*[^ \t]+[ \t]*$|[ \t]*[^ \t]+|[ \t]+")


class _WireHeader(str):
    """A header value whose folded form is fixed in advance.

    The stdlib's policies keep a value that has a ``name`` as it is and ask it to fold
    itself, so neither the message's policy nor the one aiosmtplib flattens with can
    re-split it. As a string it is the text a reader sees.
    """

    name: str
    lines: tuple[str, ...]
    mailboxes: tuple[MimeAddress, ...]

    def __new__(
        cls,
        name: str,
        text: str,
        lines: Sequence[str],
        mailboxes: Sequence[MimeAddress] = (),
    ) -> _WireHeader:
        header = super().__new__(cls, text)
        header.name = name
        header.lines = tuple(lines)
        header.mailboxes = tuple(mailboxes)
        return header

    def fold(self, *, policy: Policy) -> str:
        folded = policy.linesep.join(self.lines) + policy.linesep
        ascii_only = isinstance(policy, EmailPolicy) and not policy.utf8
        if self.mailboxes and ascii_only and not folded.isascii():
            # An internationalised address without SMTPUTF8 (a Reply-To, say, when every
            # recipient is ASCII): no standard ASCII form exists, so fall back to the
            # stdlib's, which puts encoded words in the address and many readers accept.
            assert isinstance(policy, EmailPolicy)  # for mypy: ascii_only says so
            header = policy.header_factory(self.name, list(self.mailboxes))
            return str(header.fold(policy=policy))
        return folded


def _is_plain(text: str) -> bool:
    # "=?" would make a reader look for an encoded word in the plain text.
    return _PLAIN.fullmatch(text) is not None and "=?" not in text


def _encoded_words(text: str) -> list[str]:
    """``text`` as base64 encoded words, split between characters, never inside one."""
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        data = char.encode("utf-8")
        if chunk and len(chunk) + len(data) > _WORD_BYTES:
            chunks.append(chunk)
            chunk = b""
        chunk += data
    if chunk:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


def _text_tokens(text: str) -> list[str]:
    """Tokens of an unstructured value, each starting with the whitespace before it."""
    if _is_plain(text):
        tokens = _TOKENS.findall(text)
        if all(len(token) <= _LONGEST_PLAIN for token in tokens):
            # The first token needs one space after the colon; a reader drops it again.
            return [f" {tokens[0]}", *tokens[1:]] if tokens else []
    return [f" {word}" for word in _encoded_words(text)]


def _mailbox_tokens(address: Address) -> list[str]:
    if not address.name:
        return [f" {address.email}"]
    if _is_plain(address.name) and len(address.name) <= _LONGEST_PLAIN:
        escaped = address.name.replace("\\", "\\\\").replace('"', '\\"')
        name = [f' "{escaped}"']
    else:
        name = [f" {word}" for word in _encoded_words(address.name)]
    return [*name, f" <{address.email}>"]


def _mime_mailbox(address: Address) -> MimeAddress:
    # Built from the parts, not re-parsed: internationalised local parts are valid here
    # (they go out with SMTPUTF8) but the stdlib parser rejects them.
    username, _, domain = address.email.rpartition("@")
    return MimeAddress(display_name=address.name, username=username, domain=domain)


def _fold(name: str, tokens: Iterable[str]) -> list[str]:
    """Lines of at most 78 characters where the tokens allow, broken only before a token
    (each starts with a space or tab, so every break is a fold a reader undoes)."""
    lines = [f"{name}:"]
    for token in tokens:
        if len(lines[-1]) + len(token) > _LINE and len(lines[-1]) > len(name) + 1:
            lines.append(token)
        else:
            lines[-1] += token
    return lines


def encode_header(name: str, value: str | Sequence[Address]) -> _WireHeader:
    """The header ``name`` holding ``value`` (text, or a list of mailboxes) in wire form.

    A subject or custom header with RFC 2047 encoded words in it is sent as the stdlib reads
    it (the words decoded), so a caller may pass pre-encoded text; a display name is sent
    as given. Either way a reader gets back exactly that text.
    """
    if isinstance(value, str):
        text = value
        if "=?" in text:
            text = str(email.policy.SMTP.header_factory(name, value))
        return _WireHeader(name, text, _fold(name, _text_tokens(text)))
    tokens: list[str] = []
    for index, address in enumerate(value):
        mailbox = _mailbox_tokens(address)
        if index < len(value) - 1:
            mailbox[-1] += ","
        tokens += mailbox
    text = ", ".join(str(a) for a in value)
    return _WireHeader(name, text, _fold(name, tokens), [_mime_mailbox(a) for a in value])


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
    mime["From"] = encode_header("From", [sender])
    if message.to:
        mime["To"] = encode_header("To", message.to)
    if message.cc:
        mime["Cc"] = encode_header("Cc", message.cc)
    if message.reply_to:
        mime["Reply-To"] = encode_header("Reply-To", message.reply_to)
    mime["Subject"] = encode_header("Subject", message.subject)
    mime["Date"] = email.utils.format_datetime(date or datetime.now(UTC))
    mime["Message-ID"] = message_id
    for name, value in message.headers.items():
        mime[name] = encode_header(name, value)
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
