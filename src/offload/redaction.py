"""Secrets are replaced before anything is written out (DESIGN §1.5, §9).

One redactor serves the log renderer, the jobs API, ``offload jobs show`` and metric labels,
so a secret hidden in one place is hidden in all of them. It hides:

- the value of any mapping key that looks secret (``password``, ``token``, ``Set-Cookie``,
  ...; compared lower-cased with ``-`` read as ``_``, by substring, so ``client_secret`` and
  ``X-Api-Key`` count too);
- every occurrence of a value registered with :func:`register_secret`, inside any string;
- in a log line's message and traceback, the value written after a secret key name:
  ``password=hunter2``, ``token: abc``, ``"api_key": "abc"``, ``Authorization: Bearer abc``
  (the key name is kept, so the line still says what was hidden);
- the password of a URL (``redis://:pw@host`` becomes ``redis://:***@host``);
- the arguments of a task parameter annotated ``Annotated[str, Secret]`` (or named like a
  secret key): their names travel in the job's ``meta`` (so the CLI can hide them without the
  app's code) and their values (of 4 characters or more) are hidden in the worker's logs and
  in the stored error of that job.

Redaction is a last line of defence, not permission to log secrets: substring matching errs
on the side of hiding (``tokens_used`` is hidden too).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any, Final

__all__ = [
    "DEFAULT_SECRET_KEYS",
    "REDACTED",
    "SECRET_ARGS_META",
    "Redactor",
    "Secret",
    "add_secret_keys",
    "default_redactor",
    "is_secret_key",
    "redact",
    "redact_call",
    "redact_message",
    "redact_text",
    "register_secret",
    "scoped_secrets",
    "secret_values",
]

REDACTED: Final = "***"

# Substrings of key names whose values are hidden; see the module docstring for the matching.
DEFAULT_SECRET_KEYS: Final = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
    "private_key",
    "credential",
    "session_key",
    "access_key",
)

# The job meta key that lists a job's secret parameters (names, or indexes of positional-only
# ones); written at enqueue, read wherever the job's arguments are shown.
SECRET_ARGS_META: Final = "secret_args"

# A registered value shorter than this would turn ordinary text into asterisks (a secret "a"
# would hide every "a"), which hides nothing useful and ruins the logs.
MIN_SECRET_LENGTH: Final = 4

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")

# A secret key name written in prose, then its value: ``{keys}`` is the alternation of the key
# names. The name may end a longer word (``db_password``: the match starts at the name, the
# word's start is left as it is) and sit in quotes (JSON, a repr); the value is a quoted
# string (``'...'``, ``"..."``, ``b'...'``), or else the run of characters up to a space or a
# delimiter, after an HTTP auth scheme if there is one. A value cannot begin with ``=``, so
# ``token == expected`` in a quoted line of code is no pair.
_PAIR = (
    r"(?P<key>(?:{keys})[\w.-]*[\"']?[ \t]*[:=][ \t]*)"
    r"(?:(?P<open>[bru]?(?P<quote>[\"']))(?:(?!(?P=quote))[^\\]|\\.)*(?P=quote)"
    r"|(?P<scheme>(?:bearer|basic|digest|token)[ \t]+)?[\"']?"
    r"[^\s,;&\"'<>(){{}}\[\]=][^\s,;&\"'<>(){{}}\[\]]*)"
)


# Values hidden only within one context: the secret arguments of the job that runs there.
_scoped: ContextVar[frozenset[str]] = ContextVar("offload_scoped_secrets", default=frozenset())


class Secret:
    """Marks a task parameter secret: ``password: Annotated[str, Secret]``.

    Its value is never shown: not in the jobs API, ``offload jobs show`` or logs, and not in
    the stored error if the task's exception message quotes it. The value is still stored in
    the job (the task needs it), so the store itself must be protected like a database.
    """


class Redactor:
    """Hides secrets in log events, API payloads and CLI output; see the module docstring."""

    def __init__(self, keys: Iterable[str] = DEFAULT_SECRET_KEYS) -> None:
        self._keys: tuple[str, ...] = ()
        self._key_cache: dict[str, bool] = {}
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._pairs: re.Pattern[str] | None = None
        self.add_keys(*keys)

    def add_keys(self, *names: str) -> None:
        """Hide the values of keys containing any of ``names`` as well."""
        normal = tuple(_normal(n) for n in names if n)
        self._keys = tuple(dict.fromkeys(self._keys + normal))
        self._key_cache.clear()
        # A name's ``_`` also matches ``-`` in prose, as ``is_secret_key`` reads them alike.
        longest = sorted(self._keys, key=len, reverse=True)
        alternation = "|".join(re.escape(n).replace("_", "[-_]") for n in longest)
        self._pairs = re.compile(_PAIR.format(keys=alternation), re.I) if longest else None

    @property
    def keys(self) -> tuple[str, ...]:
        return self._keys

    def register(self, *values: str) -> None:
        """Hide these exact values wherever they appear inside a string."""
        for value in values:
            if not isinstance(value, str):
                raise TypeError(f"a secret value must be a str, got {type(value).__name__}")
            if len(value) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"a registered secret must be at least {MIN_SECRET_LENGTH} characters, "
                    "since a shorter one would hide ordinary text; register the whole secret"
                )
            self._values.add(value)
        self._pattern = _alternation(self._values)

    def is_secret_key(self, key: str) -> bool:
        cached = self._key_cache.get(key)
        if cached is None:
            normal = _normal(key)
            cached = any(part in normal for part in self._keys)
            if len(self._key_cache) < 10_000:  # key names are few; bound it anyway
                self._key_cache[key] = cached
        return cached

    def text(self, value: str, extra: Collection[str] = ()) -> str:
        """``value`` with registered secrets, ``extra`` values and URL passwords hidden."""
        if self._pattern is not None:
            value = self._pattern.sub(REDACTED, value)
        scoped = _scoped.get()
        if extra or scoped:
            for secret in sorted({*extra, *scoped}, key=len, reverse=True):
                if secret:
                    value = value.replace(secret, REDACTED)
        if "://" in value:
            value = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", value)
        return value

    def message(self, value: str, extra: Collection[str] = ()) -> str:
        """``text``, with the values after secret key names hidden too (``password=...``):
        for prose, such as a log message, where a secret arrives as ``key=value``."""
        return self.text(self._hide_pairs(value), extra)

    def _hide_pairs(self, value: str) -> str:
        pairs = self._pairs
        if pairs is None:
            return value
        # Most messages hold no pair: a pair needs a separator, and a secret key name, which
        # a few substring scans of the lowered text find for far less than the pattern costs.
        if "=" not in value and ":" not in value:
            return value
        lowered = value.lower()
        if "-" in lowered:
            lowered = lowered.replace("-", "_")
        if any(map(lowered.__contains__, self._keys)):
            return pairs.sub(_hide_pair, value)
        return value

    def event(self, event: MutableMapping[str, Any]) -> None:
        """Redact a log event in place (the hot path of every log line, hence inlined)."""
        cache = self._key_cache
        full = self._pattern is not None or bool(_scoped.get())
        for key, value in event.items():
            secret = cache.get(key)
            if secret is None:
                secret = self.is_secret_key(key)
            if secret:
                event[key] = REDACTED
            elif type(value) is str:
                if key in _PROSE_FIELDS:
                    value = event[key] = self._hide_pairs(value)
                if full or "://" in value:
                    event[key] = self.text(value)
            elif isinstance(value, dict | list | tuple):
                event[key] = self.value(value)

    def value(self, data: Any, extra: Collection[str] = ()) -> Any:
        """A copy of JSON-like ``data`` with secret keys' values and secret strings hidden."""
        if isinstance(data, str):
            return self.text(data, extra)
        if isinstance(data, Mapping):
            return {
                k: REDACTED
                if isinstance(k, str) and self.is_secret_key(k)
                else self.value(v, extra)
                for k, v in data.items()
            }
        if isinstance(data, list | tuple):
            return [self.value(v, extra) for v in data]
        return data


# The fields of a log event written as prose: the message, and the traceback that
# ``format_exc_info`` renders (an exception's message quotes what the code was given).
_PROSE_FIELDS: Final = frozenset({"event", "exception"})


def _hide_pair(match: re.Match[str]) -> str:
    opening = match["open"]
    if opening is not None:
        return f"{match['key']}{opening}{REDACTED}{match['quote']}"
    return f"{match['key']}{match['scheme'] or ''}{REDACTED}"


def _normal(key: str) -> str:
    return key.lower().replace("-", "_")


def _alternation(values: Collection[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    # Longest first, so that a secret containing another is hidden whole.
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


default_redactor: Final = Redactor()
"""The process-wide redactor used by offload's logging, API and CLI."""


def register_secret(*values: str) -> None:
    """Hide these values everywhere offload writes text (logs, API, CLI, metric labels)."""
    default_redactor.register(*values)


def add_secret_keys(*names: str) -> None:
    """Hide the values of keys containing any of ``names``, beyond the default list."""
    default_redactor.add_keys(*names)


def is_secret_key(key: str) -> bool:
    return default_redactor.is_secret_key(key)


def redact(data: Any, extra: Collection[str] = ()) -> Any:
    return default_redactor.value(data, extra)


def redact_text(value: str, extra: Collection[str] = ()) -> str:
    return default_redactor.text(value, extra)


def redact_message(value: str, extra: Collection[str] = ()) -> str:
    """``redact_text`` for prose, such as a log message: ``password=...`` is hidden too."""
    return default_redactor.message(value, extra)


def redact_call(args: Any, kwargs: Any, meta: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """A job's decoded arguments with its secret parameters (and secret keys) hidden."""
    marked = (meta or {}).get(SECRET_ARGS_META) or ()
    if isinstance(args, list):
        args = [REDACTED if i in marked else v for i, v in enumerate(args)]
    if isinstance(kwargs, dict):
        kwargs = {k: REDACTED if k in marked else v for k, v in kwargs.items()}
    return redact(args), redact(kwargs)


def secret_values(data: Any) -> Iterator[str]:
    """The strings (and numbers, as text) inside a secret argument's value that are long
    enough to search for in free text (see ``MIN_SECRET_LENGTH``)."""
    if isinstance(data, str):
        if len(data) >= MIN_SECRET_LENGTH:
            yield data
    elif isinstance(data, bool) or data is None:
        return
    elif isinstance(data, int | float):
        yield from secret_values(str(data))
    elif isinstance(data, Mapping):
        for v in data.values():
            yield from secret_values(v)
    elif isinstance(data, Sequence):
        for v in data:
            yield from secret_values(v)


def current_scoped_secrets() -> frozenset[str]:
    """The values ``scoped_secrets`` hides in this context (for handing work to a thread)."""
    return _scoped.get()


# Most jobs have no secret argument: they share this one instead of a generator each.
_NOTHING_SCOPED = contextlib.nullcontext()


def scoped_secrets(values: Iterable[str]) -> contextlib.AbstractContextManager[None]:
    """Hide ``values`` in everything redacted within this context (and tasks it starts)."""
    kept = frozenset(values)
    if "" in kept:
        kept = kept - {""}
    if not kept:
        return _NOTHING_SCOPED
    return _scoping(kept)


@contextlib.contextmanager
def _scoping(values: frozenset[str]) -> Iterator[None]:
    token = _scoped.set(_scoped.get() | values)
    try:
        yield
    finally:
        _scoped.reset(token)
