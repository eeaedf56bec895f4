"""The README's tour runs as written: its Python blocks, in order, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


class TestReadme:
    def test_tour_runs(self, tmp_path: Path) -> None:
        """Every Python block of the README, concatenated, runs without error."""
        blocks = python_blocks((ROOT / "README.md").read_text())
        assert len(blocks) >= 4
        script = tmp_path / "tour.py"
        script.write_text("\n\n".join(blocks))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("OFFLOAD_URL", None)
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert 0 == done.returncode, done.stderr
        assert "succeeded 1" in done.stdout
