"""SMTP settings read from ``OFFLOAD_SMTP_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from offload.email.message import DEFAULT_MAX_ATTACHMENT_BYTES, Address

__all__ = ["MailSettings", "TLSMode"]

TLSMode = Literal["starttls", "implicit", "none"]


class MailSettings(BaseSettings):
    """How to reach the SMTP server. ``OFFLOAD_SMTP_PASSWORD`` is kept as a ``SecretStr``,
    so it never shows in reprs, logs or error messages."""

    model_config = SettingsConfigDict(
        env_prefix="OFFLOAD_SMTP_",
        env_file=".env",
        # The same .env usually holds the other OFFLOAD_* settings too.
        extra="ignore",
    )

    host: str = "localhost"
    port: int | None = Field(default=None, description="default: 465 implicit, 587 starttls, 25")
    username: str | None = None
    password: SecretStr | None = None
    tls: TLSMode = "starttls"
    timeout: float = 30.0
    sender: Address | None = None
    ca_file: Path | None = Field(default=None, description="CA bundle for a private CA")
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    templates: Path = Field(default=Path("templates/email"), description="template folder")
    rate_limit: str | None = Field(
        default=None,
        description="mails a period for every mail task together, e.g. '10/s' (the server's "
        "limit); enforced by the job store across every worker",
    )
