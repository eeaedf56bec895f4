"""The service's settings, from the environment or a ``.env`` file (pydantic-settings).

``NOTIFY_*`` for the service itself, ``OFFLOAD_URL`` for the job store and ``OFFLOAD_SMTP_*``
for mail (read by ``offload.email``). A setting that does not parse stops the service at
start with the variable named, never a default silently used instead.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, EmailStr, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offload.fastapi import DEFAULT_MAX_BODY_SIZE

TOKEN_FILE = "api-token"
MIN_TOKEN = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFY_", env_file=".env", extra="ignore", frozen=True
    )

    offload_url: str = Field(
        default="",
        validation_alias=AliasChoices("OFFLOAD_URL"),
        description="the job store; empty: SQLite in the data folder",
    )
    data_dir: Path = Field(default=Path("notify-data"), description="uploads and outputs")
    database_url: str = Field(
        default="", description="the service's own data (SQLAlchemy async URL)"
    )
    api_token: SecretStr | None = Field(default=None, description="bearer token")
    admin_email: EmailStr = "admin@example.com"
    timezone: str = "UTC"
    max_upload_mb: int = Field(default=50, ge=1, le=10_240)
    chunk_mb: float = Field(
        default=8,
        ge=0,
        description="a CSV larger than this is cleaned in chunks of about this size in "
        "parallel (0: never)",
    )
    max_image_mb: int = Field(default=10, ge=1, le=200)
    webhook_secret: SecretStr = Field(
        default=SecretStr("dev-webhook-secret"), description="HMAC key of payment callbacks"
    )
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_SIZE, ge=0)
    log: Literal["json", "console", "off"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mail_sink_url: str = Field(
        default="", description="the development mail sink's JSON URL, for the dashboard"
    )
    embedded_worker: bool = Field(
        default=True, description="run jobs in the web process; off with offload worker"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def store_url(self) -> str:
        return self.offload_url or f"sqlite:///{(self.data_dir / 'jobs.db').resolve()}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'notify.db').resolve()}"

    @property
    def chunk_bytes(self) -> int:
        return int(self.chunk_mb * (1 << 20))

    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def outputs(self) -> Path:
        return self.data_dir / "outputs"


_current: list[Settings] = []


def configure(settings: Settings) -> Settings:
    """Make ``settings`` what ``get_settings`` gives from now on in this process (the app
    module does so when it is imported, so that a test importing it anew reads its own)."""
    _current[:] = [settings]
    return settings


def get_settings() -> Settings:
    """The process's settings: the endpoints' and the tasks' dependency alike."""
    if not _current:
        _current.append(Settings())
    return _current[0]


def api_token(settings: Settings) -> tuple[str, bool]:
    """The bearer token and whether it was made just now. Unset, one is generated on the
    first start and kept in the data folder, so that restarts keep it."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value(), False
    path = settings.data_dir / TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), False
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token, True
