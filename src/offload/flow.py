"""A task's flow-control options (``rate_limit=``, ``concurrency=``), checked when the task
is declared and turned into the limits each job carries.

The limits are enforced by the store in ``claim`` (``FlowControl``), not by a worker, so that
they hold however many workers and machines run: ten workers on a ``"10/s"`` task start ten
jobs a second between them, not a hundred. This module only names the keys: a job's rate key
is its task's name, or the name and what ``rate_limit_key`` made of its arguments (one bucket
per recipient domain, per tenant), or, when ``rate_limit_key`` is a string, that name alone:
one bucket shared by every task that names it (the SMTP server's limit, for every mail
task). The same goes for its concurrency key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from offload.records import JobLimits

__all__ = ["FlowOptions", "RateLimit", "check_max_queued", "make_flow", "parse_rate"]

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")
MAX_KEY = 200


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int
    period: float
    burst: int

    @property
    def per_second(self) -> float:
        return self.count / self.period


def parse_rate(text: str, burst: int | None = None) -> RateLimit:
    """``"10/s"``, ``"600/m"``, ``"100/h"``, ``"5/10s"``; ``burst`` jobs may start at once
    after a quiet spell (default 1: starts spaced evenly)."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"rate_limit={text!r}: write jobs per period, e.g. '10/s', '600/m', '100/h' or '5/10s'"
        )
    count, span, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or span < 1:
        raise ValueError(f"rate_limit={text!r}: the count and the period must be positive")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise ValueError(f"burst must be a whole number of jobs >= 1, got {burst!r}")
    return RateLimit(count, span * PERIODS[unit], 1 if burst is None else burst)


@dataclass(frozen=True, slots=True)
class FlowOptions:
    task: str
    rate: RateLimit | None
    rate_key: Callable[..., Any] | str | None
    concurrency: int | None
    concurrency_key: Callable[..., Any] | str | None
    max_queued: int | None = None

    def limits_for(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], queue_max: int | None = None
    ) -> JobLimits:
        """The limits of the job for this call. A key function gets the call's arguments as
        the task does; what it returns names the bucket or the slot group."""
        rate_key = conc_key = None
        if self.rate is not None:
            rate_key = self._key("rate_limit_key", self.rate_key, args, kwargs)
        if self.concurrency is not None:
            conc_key = self._key("concurrency_key", self.concurrency_key, args, kwargs)
        return JobLimits(
            rate_key=rate_key,
            rate=None if self.rate is None else self.rate.per_second,
            burst=1 if self.rate is None else self.rate.burst,
            concurrency_key=conc_key,
            concurrency=self.concurrency,
            max_queued=self.max_queued,
            queue_max=queue_max,
        )

    def _key(
        self,
        what: str,
        fn: Callable[..., Any] | str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str:
        if fn is None:
            return self.task
        if isinstance(fn, str):
            # A name, not a function: one bucket (or group) shared by every task naming it.
            return f"={fn}"
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            raise TypeError(
                f"task {self.task!r}: {what} raised {type(exc).__name__}: {exc}; it is called "
                "with the task's arguments and must return the key as a string"
            ) from exc
        key = str(value)
        if not key or len(key) > MAX_KEY:
            raise TypeError(
                f"task {self.task!r}: {what} returned {value!r}; a key is 1 to {MAX_KEY} characters"
            )
        return f"{self.task}:{key}"


def make_flow(
    task: str,
    *,
    rate_limit: str | None,
    burst: int | None,
    rate_limit_key: Callable[..., Any] | str | None,
    concurrency: int | None,
    concurrency_key: Callable[..., Any] | str | None,
    max_queued: int | None = None,
) -> FlowOptions | None:
    """The task's flow options, or None when it has no limit; raises ``ValueError`` for an
    option that cannot mean anything."""
    if rate_limit is None and (burst is not None or rate_limit_key is not None):
        raise ValueError("burst= and rate_limit_key= need rate_limit= (e.g. '10/s')")
    if concurrency is None and concurrency_key is not None:
        raise ValueError("concurrency_key= needs concurrency= (how many may run at once)")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    for name, fn in (("rate_limit_key", rate_limit_key), ("concurrency_key", concurrency_key)):
        if isinstance(fn, str):
            if not fn or len(fn) > MAX_KEY:
                raise ValueError(f"{name}={fn!r}: a shared name is 1 to {MAX_KEY} characters")
        elif fn is not None and not callable(fn):
            raise ValueError(
                f"{name} must be a function of the task's arguments, or a name that tasks "
                f"share, got {fn!r}"
            )
    check_max_queued("max_queued", max_queued)
    if rate_limit is None and concurrency is None and max_queued is None:
        return None
    rate = None if rate_limit is None else parse_rate(rate_limit, burst)
    return FlowOptions(task, rate, rate_limit_key, concurrency, concurrency_key, max_queued)


def check_max_queued(what: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what} must be a whole number of jobs >= 1, got {value!r}")
