"""docs/dependencies.md: its Python samples, in order, run in one namespace without error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "dependencies.md"
SAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


class TestDependenciesDocs:
    def test_samples_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every sample runs, each seeing what the ones before it defined."""
        assert len(SAMPLES) >= 4
        monkeypatch.delenv("APP_DATABASE_URL", raising=False)
        namespace: dict[str, object] = {"__name__": "docs_dependencies"}
        for sample in SAMPLES:
            exec(compile(sample, str(DOC), "exec"), namespace)
