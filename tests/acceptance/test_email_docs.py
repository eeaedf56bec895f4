"""docs/email.md: every Python sample runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "email.md"
SAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


class TestEmailDocs:
    def test_there_are_samples(self) -> None:
        """The page has code samples to check."""
        assert len(SAMPLES) >= 5

    @pytest.mark.parametrize("sample", SAMPLES, ids=[f"sample{n}" for n in range(len(SAMPLES))])
    def test_sample_runs(
        self, sample: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Each sample runs without error (in an empty directory, so no .env applies)."""
        monkeypatch.chdir(tmp_path)
        exec(compile(sample, str(DOC), "exec"), {"__name__": "docs_sample"})
