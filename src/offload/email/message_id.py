"""Message-IDs that stay the same when a job is retried.

If the connection drops after the server received the final dot but before its reply, the
job cannot know the message was delivered and sends it again. With the same Message-ID on
both copies, the receiving side (or a deduplicating relay) can recognise the second one.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from offload.email.message import check_header_value

__all__ = ["make_message_id", "random_message_id"]

# Characters that may appear unquoted on the left of the @ in a msg-id (RFC 5322 dot-atom),
# minus a few that confuse some clients; a job id outside this set is hashed.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,63}")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def _ascii_domain(domain: str) -> str:
    check_header_value(domain)
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{domain!r} is not a valid domain for a Message-ID") from None
    if not _DOMAIN.fullmatch(ascii_domain):
        raise ValueError(f"{domain!r} is not a valid domain for a Message-ID")
    return ascii_domain.lower()


def make_message_id(job_id: str, domain: str) -> str:
    """The Message-ID for the email a job sends: a pure function of the job id and domain,
    so every attempt of the job sends the same id."""
    if _SAFE_ID.fullmatch(job_id):
        left = f"offload.{job_id}"
    else:
        left = "offload.h" + hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:40]
    return f"<{left}@{_ascii_domain(domain)}>"


def random_message_id(domain: str) -> str:
    """A fresh Message-ID for a message sent outside a job."""
    return f"<offload.r{secrets.token_hex(16)}@{_ascii_domain(domain)}>"
