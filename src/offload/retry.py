"""Retry policy: a pure function from (attempt, error) to "again after N seconds" or "give up".

The decision is persisted as the job's next ``run_at`` so that retries survive a crash, which
in-process retry libraries cannot offer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Run the job again after ``delay`` seconds."""

    delay: float


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The delay before attempt ``n + 1`` is ``base * factor ** (n - 1)``, capped at ``max_delay``,
    then spread by ``jitter`` (a fraction: 0.5 draws uniformly from 50 % to 100 % of the delay)
    so that many jobs failing together do not retry in lockstep against the same dependency.
    """

    retries: int = 3
    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()
    _random: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.base < 0 or self.max_delay < 0:
            raise ValueError("base and max_delay must be >= 0 seconds")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    @classmethod
    def of(
        cls,
        retries: int,
        backoff: float | timedelta | RetryPolicy | None = None,
        retry_on: tuple[type[BaseException], ...] | None = None,
        give_up_on: tuple[type[BaseException], ...] | None = None,
    ) -> RetryPolicy:
        """Build the policy from the loose options ``@jobs.task`` accepts."""
        if isinstance(backoff, RetryPolicy):
            base = backoff
        elif backoff is None:
            base = cls(retries=retries)
        else:
            base = cls(retries=retries, base=_seconds(backoff))
        return cls(
            retries=retries,
            base=base.base,
            factor=base.factor,
            max_delay=base.max_delay,
            jitter=base.jitter,
            retry_on=retry_on if retry_on is not None else base.retry_on,
            give_up_on=give_up_on if give_up_on is not None else base.give_up_on,
        )

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def delay(self, attempt: int) -> float:
        """The un-jittered delay after the ``attempt``-th failure (1-based)."""
        exponent = max(attempt - 1, 0)
        # Cap the exponent so huge attempt numbers cannot overflow a float.
        raw = self.base * self.factor ** min(exponent, 64)
        return min(raw, self.max_delay)

    def decide(
        self, attempt: int, error: BaseException, max_attempts: int | None = None
    ) -> RetryDecision | None:
        """Retry after a delay, or ``None`` to fail the job now.

        ``max_attempts`` overrides the policy's budget for one job (``task.options(retries=)``).
        """
        limit = self.max_attempts if max_attempts is None else max_attempts
        if attempt >= limit:
            return None
        if isinstance(error, self.give_up_on) or not isinstance(error, self.retry_on):
            return None
        delay = self.delay(attempt)
        if self.jitter:
            delay *= 1 - self.jitter * self._random.random()
        return RetryDecision(delay=delay)
