"""docs/observability.md: every Python sample runs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
SAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


@pytest.fixture
def restore_logging(fresh_redactor: object) -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.reset_defaults()


class TestObservabilityDocs:
    def test_there_are_samples(self) -> None:
        assert len(SAMPLES) >= 5

    @pytest.mark.parametrize("sample", SAMPLES, ids=[f"sample{n}" for n in range(len(SAMPLES))])
    def test_sample_runs(self, sample: str, restore_logging: None) -> None:
        exec(compile(sample, str(DOC), "exec"), {"__name__": "docs_sample"})
