"""RetryPolicy is a pure function; its bounds hold for every attempt and jitter draw."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload import RetryPolicy


class TestRetryPolicy:
    @given(
        attempt=st.integers(min_value=1, max_value=10_000),
        base=st.floats(min_value=0, max_value=100),
        factor=st.floats(min_value=1, max_value=10),
        max_delay=st.floats(min_value=0, max_value=86_400),
        jitter=st.floats(min_value=0, max_value=1),
    )
    def test_delay_stays_within_bounds(
        self, attempt: int, base: float, factor: float, max_delay: float, jitter: float
    ) -> None:
        """The jittered delay lies between (1 - jitter) x and 1 x the capped exponential."""
        policy = RetryPolicy(
            retries=attempt, base=base, factor=factor, max_delay=max_delay, jitter=jitter
        )
        decision = policy.decide(attempt, RuntimeError())
        assert decision is not None
        ceiling = min(base * factor ** min(attempt - 1, 64), max_delay)
        assert ceiling * (1 - jitter) - 1e-9 <= decision.delay <= ceiling + 1e-9

    @given(retries=st.integers(min_value=0, max_value=50))
    def test_gives_up_after_the_last_attempt(self, retries: int) -> None:
        """Attempts 1..retries are retried; attempt retries + 1 is the last."""
        policy = RetryPolicy(retries=retries)
        for attempt in range(1, retries + 1):
            assert policy.decide(attempt, RuntimeError()) is not None
        assert policy.decide(retries + 1, RuntimeError()) is None

    def test_exception_filters(self) -> None:
        """give_up_on wins over retry_on; errors outside retry_on are not retried."""
        policy = RetryPolicy(retry_on=(OSError,), give_up_on=(PermissionError,))
        assert policy.decide(1, ConnectionError()) is not None
        assert policy.decide(1, PermissionError()) is None
        assert policy.decide(1, ValueError()) is None

    def test_per_job_budget_overrides(self) -> None:
        """A job's own max_attempts replaces the policy's budget."""
        policy = RetryPolicy(retries=0)
        assert policy.decide(1, RuntimeError(), max_attempts=3) is not None
        assert policy.decide(3, RuntimeError(), max_attempts=3) is None

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"retries": -1}, "retries"),
            ({"factor": 0.5}, "factor"),
            ({"jitter": 2.0}, "jitter"),
            ({"base": -1.0}, "base"),
        ],
    )
    def test_invalid_values_are_refused(self, kwargs: dict[str, float], message: str) -> None:
        """Nonsense settings fail at declaration, naming the setting."""
        with pytest.raises(ValueError, match=message):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]
