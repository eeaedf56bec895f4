"""The PostgreSQL store's URL: what psycopg connects with, and offload's own options."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from offload.errors import ConfigError
from offload.stores._common import mask_url

DEFAULT_SCHEMA = "public"
DEFAULT_OP_TIMEOUT = 5.0
DEFAULT_POOL_MAX = 10
# Without LISTEN (a pooler in transaction mode, or while the listening connection is down),
# an idle worker looks for work this often.
DEFAULT_POLL = 1.0

_OWN = ("schema", "op_timeout", "pool_max", "migrate", "listen", "poll", "prepare")
# 55 characters at most: the NOTIFY channel is "offload_" + the schema, and PostgreSQL's
# names stop at 63.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,54}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

EXAMPLE = "postgresql://user:password@localhost:5432/app?schema=offload"


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    conninfo: str
    """The URL handed to psycopg, without offload's own options (libpq's pass through)."""
    display_url: str
    """The URL with any password masked, for messages and logs."""
    schema: str
    op_timeout: float
    """Seconds any one operation may take, connecting included, before StoreUnavailable."""
    pool_max: int
    migrate: bool
    """Bring the schema up to date on open; off, open refuses an outdated one."""
    listen: bool
    """LISTEN for new work; off for a pooler in transaction mode, which cannot hold it."""
    poll: float
    prepare: bool
    """Server-side prepared statements; off for a pooler in transaction mode."""

    @property
    def quoted_schema(self) -> str:
        return '"' + self.schema + '"'

    @property
    def channel(self) -> str:
        """The NOTIFY channel: one per schema, so stores of two schemas never wake each
        other's workers."""
        return f"offload_{self.schema}"


def _flag(name: str, value: str, url: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} in {mask_url(url)!r}: use true or false")


def _seconds(name: str, value: str, url: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{name}={value!r} in {mask_url(url)!r}: give seconds, e.g. 5")
    return seconds


def parse_postgres_url(url: str) -> PostgresOptions:
    """``postgresql://[user[:password]@]host[:port]/database[?schema=...&op_timeout=...]``;
    other query options (``sslmode``, ``application_name``, ...) go to libpq unchanged."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"invalid PostgreSQL URL {mask_url(url)!r} ({exc}); use {EXAMPLE}")
    if parts.scheme not in {"postgresql", "postgres"} or not parts.path.strip("/"):
        raise ConfigError(
            f"invalid PostgreSQL URL {mask_url(url)!r}: name the database, as in {EXAMPLE}"
        )
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _OWN:
            own[name] = value
        else:
            rest.append((name, value))
    schema = own.get("schema", DEFAULT_SCHEMA)
    if not _NAME.match(schema):
        raise ConfigError(
            f"schema={schema!r} in {mask_url(url)!r}: use a plain name of letters, digits "
            "and underscores (at most 55), not starting with a digit"
        )
    try:
        pool_max = int(own.get("pool_max", str(DEFAULT_POOL_MAX)))
    except ValueError:
        pool_max = 0
    if pool_max < 2:
        raise ConfigError(
            f"pool_max={own.get('pool_max')!r} in {mask_url(url)!r}: give a number of "
            "connections, at least 2"
        )
    if "connect_timeout" not in dict(rest):
        # libpq waits for ever by default; a dead host must become StoreUnavailable.
        timeout = _seconds("op_timeout", own.get("op_timeout", str(DEFAULT_OP_TIMEOUT)), url)
        rest.append(("connect_timeout", str(max(2, round(timeout)))))
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
    return PostgresOptions(
        conninfo=conninfo,
        display_url=mask_url(url),
        schema=schema,
        op_timeout=_seconds("op_timeout", own.get("op_timeout", str(DEFAULT_OP_TIMEOUT)), url),
        pool_max=pool_max,
        migrate=_flag("migrate", own.get("migrate", "true"), url),
        listen=_flag("listen", own.get("listen", "true"), url),
        poll=_seconds("poll", own.get("poll", str(DEFAULT_POLL)), url),
        prepare=_flag("prepare", own.get("prepare", "true"), url),
    )
