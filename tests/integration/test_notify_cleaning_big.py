"""clean_csv on big files and through crashes, in a child process of its own.

The child reports its own peak RSS (VmHWM), so the pytest process's memory is not counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from examples.notify.cleaning import OUTPUTS, clean_csv

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from examples.notify.cleaning import clean_csv

    started = time.perf_counter()
    summary = clean_csv(Path(sys.argv[1]), Path(sys.argv[2]))
    elapsed = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_kib = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:"))
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_kib / 1024,
                      "rows_out": summary.rows_out, "types": [c.type for c in summary.columns]}))
    """
)

# Ends the child the way a power cut would: no cleanup, no finally blocks.
CRASH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from examples.notify.cleaning import clean_csv

    def crash(fraction: float, message: str) -> None:
        if fraction >= float(sys.argv[3]):
            os._exit(3)

    clean_csv(Path(sys.argv[1]), Path(sys.argv[2]), on_progress=crash)
    """
)


def write_csv(path: Path, size: int) -> int:
    """A CSV of about ``size`` bytes with distinct rows, written 20 000 rows at a time."""
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("id;name;amount;active;day;note\n")
        while file.tell() < size:
            file.write(
                "".join(
                    f"{n};  user {n % 977}  ;{n % 10_000}.{n % 100:02d};"
                    f"{'yes' if n % 3 else 'no'};2024-{n % 12 + 1:02d}-{n % 28 + 1:02d};"
                    f"{'NA' if n % 5 == 0 else 'note ' + str(n % 31)}\n"
                    for n in range(rows, rows + 20_000)
                )
            )
            rows += 20_000
    return rows


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def measure(source: Path, out_dir: Path) -> dict[str, Any]:
    done = run_child(CHILD, str(source), str(out_dir))
    assert 0 == done.returncode, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_memory_stays_flat_from_20_to_100_mb(tmp_path: Path) -> None:
    """Peak RSS grows by little more than the row digests from 20 MB to 100 MB of CSV."""
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    write_csv(small, 20 * MB)
    rows = write_csv(big, 100 * MB)
    at_20 = measure(small, tmp_path / "out_small")
    small.unlink()
    at_100 = measure(big, tmp_path / "out_big")
    print(f"20 MB: {at_20}\n100 MB: {at_100}")
    assert rows == at_100["rows_out"]
    assert ["integer", "text", "decimal", "boolean", "date", "text"] == at_100["types"]
    assert at_100["peak_mib"] < 200
    assert at_100["peak_mib"] - at_20["peak_mib"] < 60


def test_a_rerun_after_a_crash_starts_clean(tmp_path: Path) -> None:
    """A run killed mid-way publishes nothing; the next run removes its leftovers and writes
    the same files as a run that never crashed."""
    source = tmp_path / "in.csv"
    write_csv(source, 2 * MB)
    reference = tmp_path / "reference"
    clean_csv(source, reference)
    out_dir = tmp_path / "out"
    crashed = run_child(CRASH, str(source), str(out_dir), "0.7")
    assert 3 == crashed.returncode, crashed.stderr
    assert not out_dir.exists()
    assert [] != [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]

    clean_csv(source, out_dir)

    assert [] == [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    for name in OUTPUTS:
        assert (reference / name).read_bytes() == (out_dir / name).read_bytes()
