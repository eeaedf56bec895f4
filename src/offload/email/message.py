"""The email a job sends: a validated, JSON-safe pydantic model.

Everything that ends up in a header is checked here, before the message is ever queued, so a
value carrying a line break (header injection) fails at the caller with a ``ValidationError``
naming the field instead of reaching an SMTP server. The same check, :data:`HeaderText`, is
meant for an API's request models, so that a client hears of a bad value when it sends it
rather than from a job that can never succeed.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import mimetypes
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator

from offload.email.errors import AttachmentTooLarge

__all__ = [
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "Address",
    "Attachment",
    "EmailMessage",
    "HeaderText",
    "check_header_value",
]

# Most providers refuse messages above 10-25 MB, and base64 makes an attachment a third
# larger on the wire; 10 MiB per attachment stays under the common limits.
DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024

# Header values must stay on one line. Besides CR and LF, refuse every other character that
# str.splitlines() or a mail client may treat as a line break, and the remaining C0 controls
# (tab excepted, as it is legal folding whitespace).
_FORBIDDEN_IN_HEADERS = frozenset(
    [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f", "\x85", "\u2028", "\u2029"]
)

# RFC 5322 field-name: printable US-ASCII except the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")

# Headers the message builds from its own fields (or that the mailer sets); setting them
# through ``headers`` would bypass the recipient and address checks.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)

_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")


def check_header_value(value: str) -> str:
    """Refuse a value that would not stay on one header line, or that cannot be sent at all;
    return it unchanged otherwise.

    Raises ``ValueError``, so in a pydantic model it becomes a ``ValidationError`` naming the
    field (a 422 naming it in FastAPI).
    """
    _check_chars(value, "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"header values must be text that UTF-8 can encode; found the lone surrogate "
            f"U+{ord(value[exc.start]):04X}"
        ) from None
    if "=?" in value:
        # The stdlib header parser decodes RFC 2047 encoded words found in a value, and
        # some Python versions write the decoded text back unencoded when folding: an
        # encoded CR LF would then become a real line break. Check the decoded form too.
        try:
            decoded = str(email.policy.SMTP.header_factory("X-Offload-Check", value))
        except Exception:  # the parser's failure modes are many; any of them means "no"
            raise ValueError("header value has a malformed encoded word (=?...?=)") from None
        _check_chars(decoded, " after decoding its encoded words (=?...?=)")
    return value


HeaderText = Annotated[str, AfterValidator(check_header_value)]
"""A ``str`` that can go into an email header: one line, no control characters (tab
excepted), no encoded word that decodes to either. Use it in request models for values that
end up in a subject or display name."""


def _check_chars(value: str, where: str) -> None:
    for char in value:
        if char in _FORBIDDEN_IN_HEADERS:
            raise ValueError(
                f"header values must be a single line; found the control character "
                f"U+{ord(char):04X}{where} (line breaks would let the value add headers)"
            )


class Address(BaseModel):
    """One mailbox: an address checked by email-validator and an optional display name.

    Accepts ``"Zoë Example <zoe@example.com>"``, ``"zoe@example.com"`` or
    ``{"email": ..., "name": ...}``; stores the normalised address so that validating the
    JSON form again gives an equal value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str
    name: str = ""

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return _split_address(data)
        if isinstance(data, Address):
            return {"email": data.email, "name": data.name}
        return data

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str) -> str:
        check_header_value(value)
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"invalid email address {value!r}: {exc}") from None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_header_value(value).strip()

    @property
    def domain(self) -> str:
        """The part after the @, used for Message-IDs."""
        return self.email.rpartition("@")[2]

    def __str__(self) -> str:
        if not self.name:
            return self.email
        escaped = self.name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{self.email}>'


def _split_address(text: str) -> dict[str, str]:
    """Split ``Name <addr>`` into its parts; anything else is taken as a bare address."""
    stripped = text.strip()
    if stripped.endswith(">") and "<" in stripped:
        name, _, rest = stripped[:-1].rpartition("<")
        name = name.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return {"email": rest.strip(), "name": name}
    return {"email": stripped, "name": ""}


def _as_list(value: Any) -> Any:
    """Let callers pass one address where a list is expected."""
    if isinstance(value, str | Address | Mapping):
        return [value]
    return value


AddressList = Annotated[list[Address], BeforeValidator(_as_list)]


def _decode_bytes(value: Any) -> Any:
    # Python callers pass raw bytes; the JSON form carries base64 text.
    if isinstance(value, str):
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("attachment content given as text must be base64") from None
    return value


Content = Annotated[
    bytes,
    BeforeValidator(_decode_bytes),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
]


class Attachment(BaseModel):
    """A file attached to a message: its bytes, or a path read when the message is sent.

    A path keeps large files out of the job's stored arguments; it must exist on the machine
    that runs the worker.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: str
    content: Content | None = None
    path: Path | None = None
    content_type: str = "application/octet-stream"

    @model_validator(mode="before")
    @classmethod
    def _guess_content_type(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data.get("content_type"):
            guessed, _ = mimetypes.guess_type(str(data.get("filename", "")))
            return {**data, "content_type": guessed or "application/octet-stream"}
        return data

    @field_validator("filename")
    @classmethod
    def _check_filename(cls, value: str) -> str:
        check_header_value(value)
        if not value.strip():
            raise ValueError("an attachment needs a filename")
        return value

    @field_validator("content_type")
    @classmethod
    def _check_content_type(cls, value: str) -> str:
        if not _CONTENT_TYPE.fullmatch(value):
            raise ValueError(f"content_type must look like 'application/pdf', got {value!r}")
        return value.lower()

    @model_validator(mode="after")
    def _check_source(self, info: ValidationInfo) -> Self:
        if (self.content is None) == (self.path is None):
            raise ValueError("give an attachment either content (bytes) or a path, not both")
        limit = max_attachment_bytes(info.context)
        size = len(self.content) if self.content is not None else _file_size(self.path)
        if size is not None and size > limit:
            raise ValueError(
                f"attachment {self.filename!r} is {size} bytes, over the limit of {limit} "
                f"bytes; raise max_attachment_bytes or send a link instead"
            )
        return self

    def read(self, limit: int = DEFAULT_MAX_ATTACHMENT_BYTES) -> bytes:
        """The attachment's bytes, checked against ``limit`` again for path attachments,
        since the file may have grown since the message was made."""
        if self.content is not None:
            data = self.content
        else:
            assert self.path is not None  # guaranteed by _check_source
            with self.path.open("rb") as file:
                data = file.read(limit + 1)
        if len(data) > limit:
            raise AttachmentTooLarge(
                f"attachment {self.filename!r} is over the limit of {limit} bytes; "
                f"raise max_attachment_bytes or send a link instead"
            )
        return data


def max_attachment_bytes(context: Any) -> int:
    """The size limit from the validation context (``{"max_attachment_bytes": n}``)."""
    if isinstance(context, Mapping):
        value = context.get("max_attachment_bytes")
        if isinstance(value, int):
            return value
    return DEFAULT_MAX_ATTACHMENT_BYTES


def _file_size(path: Path | None) -> int | None:
    # The file may only exist on the worker; it is checked again when read.
    try:
        return path.stat().st_size if path is not None else None
    except OSError:
        return None


class EmailMessage(BaseModel):
    """An email to send, safe to store as a job argument.

    ``model_dump(mode="json")`` gives plain JSON (attachment bytes as base64) and
    ``model_validate`` on it gives an equal message. ``sender`` may be left out; the mailer
    then uses its configured default sender (``OFFLOAD_SMTP_SENDER``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: AddressList = Field(default_factory=list)
    subject: str
    text: str | None = None
    html: str | None = None
    sender: Address | None = None
    cc: AddressList = Field(default_factory=list)
    bcc: AddressList = Field(default_factory=list)
    reply_to: AddressList = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("subject")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        return check_header_value(value)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"header name {name!r} must be printable ASCII without spaces or colons"
                )
            lowered = name.lower()
            if lowered in _RESERVED_HEADERS or lowered.startswith("resent-"):
                raise ValueError(
                    f"header {name!r} is set by offload from the message fields; use the "
                    f"matching field (to, cc, bcc, sender, reply_to, subject) instead"
                )
            if lowered in seen:
                raise ValueError(f"header {name!r} is given twice (names are case-insensitive)")
            seen.add(lowered)
            check_header_value(text)
        return value

    @model_validator(mode="after")
    def _check_parts(self) -> Self:
        if self.text is None and self.html is None:
            raise ValueError("a message needs a text part, an html part, or both")
        if not (self.to or self.cc or self.bcc):
            raise ValueError("a message needs at least one recipient in to, cc or bcc")
        return self

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients: every address in to, cc and bcc, once each, in order."""
        seen: dict[str, None] = {}
        for address in [*self.to, *self.cc, *self.bcc]:
            seen.setdefault(address.email, None)
        return list(seen)
