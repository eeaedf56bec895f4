"""Ready-made credentials checks for the dashboard (and the jobs API): HTTP Basic and a bearer
token, read from settings and compared in constant time.

Each is an ordinary FastAPI dependency that answers 401 for a stranger and returns who the
user is, so it can be passed as ``auth=`` wherever offload asks for one. A dashboard behind a
company's single sign-on passes its own dependency instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from offload.errors import ConfigError
from offload.redaction import register_secret

__all__ = ["BasicAuth", "BearerAuth", "DashboardSettings", "User", "basic_auth", "bearer_auth"]

# A password or token shorter than this can be guessed by anyone who can reach the page.
MIN_SECRET_LENGTH = 8


class DashboardSettings(BaseSettings):
    """``OFFLOAD_DASHBOARD_*`` from the environment or ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="OFFLOAD_DASHBOARD_", env_file=".env", extra="ignore"
    )

    user: str = "admin"
    password: SecretStr | None = None
    token: SecretStr | None = None
    secret: SecretStr | None = None
    """Signs the pages' CSRF tokens; give every instance behind one address the same value."""


@dataclass(frozen=True, slots=True)
class User:
    """Who passed the check, as the dashboard shows and logs it."""

    name: str
    method: str

    def __str__(self) -> str:
        return self.name


def _digest(value: str) -> bytes:
    # Hashing first makes the comparison constant time in the length of the secret too:
    # compare_digest on unequal lengths returns at once.
    return hashlib.sha256(value.encode("utf-8")).digest()


def _checked(value: str, name: str, setting: str) -> str:
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"the dashboard {name} is shorter than {MIN_SECRET_LENGTH} characters; set "
            f"{setting} to a longer one (python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))' makes one)"
        )
    # The value must never reach a log line or an error shown to a user.
    register_secret(value)
    return value


class BasicAuth:
    """HTTP Basic: the browser asks for the user name and password once and sends them with
    every request. Use it over HTTPS only (or on loopback), as the password travels with
    each request."""

    def __init__(
        self, user: str | None = None, password: str | None = None, *, realm: str = "offload"
    ) -> None:
        settings = DashboardSettings() if user is None or password is None else None
        if password is None:
            assert settings is not None
            if settings.password is None:
                raise ConfigError(
                    "basic_auth() needs a password: pass password=... or set "
                    "OFFLOAD_DASHBOARD_PASSWORD (and OFFLOAD_DASHBOARD_USER, default admin)"
                )
            password = settings.password.get_secret_value()
        self.user = user if user is not None else (settings.user if settings else "admin")
        self._user = _digest(self.user)
        self._password = _digest(_checked(password, "password", "OFFLOAD_DASHBOARD_PASSWORD"))
        self._challenge = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}

    async def __call__(self, request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic" and encoded:
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, sep, password = decoded.partition(":")
            # Both compared, whatever the first gives, so timing tells nothing of the name.
            user_ok = secrets.compare_digest(_digest(user), self._user)
            password_ok = secrets.compare_digest(_digest(password), self._password)
            if sep and user_ok and password_ok:
                return User(user, "basic")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="credentials required",
            headers=self._challenge,
        )


class BearerAuth:
    """``Authorization: Bearer <token>``: for scripts, or a proxy in front that adds it. A
    browser cannot send it by itself; people use ``BasicAuth`` or the application's own
    login."""

    def __init__(self, token: str | None = None, *, name: str = "token") -> None:
        if token is None:
            configured = DashboardSettings().token
            if configured is None:
                raise ConfigError(
                    "bearer_auth() needs a token: pass token=... or set OFFLOAD_DASHBOARD_TOKEN"
                )
            token = configured.get_secret_value()
        self.name = name
        self._token = _digest(_checked(token, "token", "OFFLOAD_DASHBOARD_TOKEN"))

    async def __call__(self, request: Request) -> User:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(
            _digest(token.strip()), self._token
        ):
            return User(self.name, "bearer")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def basic_auth(
    user: str | None = None, password: str | None = None, *, realm: str = "offload"
) -> BasicAuth:
    """An HTTP Basic check; without arguments it reads ``OFFLOAD_DASHBOARD_USER`` (default
    ``admin``) and ``OFFLOAD_DASHBOARD_PASSWORD``."""
    return BasicAuth(user, password, realm=realm)


def bearer_auth(token: str | None = None) -> BearerAuth:
    """A bearer-token check; without an argument it reads ``OFFLOAD_DASHBOARD_TOKEN``."""
    return BearerAuth(token)
