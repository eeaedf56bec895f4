"""Reads of a SQLite job file behind the store's back, for the tests that check what the store
wrote: its layout version and its jobs counted row by row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from offload.records import JobState


def layout_version(path: Path) -> int:
    """The file's ``user_version`` header field, where the store records its layout."""
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return version


def recount(path: Path) -> dict[tuple[str, JobState], int]:
    """Jobs per (queue, state) the slow way, over every row: what the kept totals must equal."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT queue, state, count(*) FROM offload_jobs GROUP BY queue, state"
        ).fetchall()
    finally:
        conn.close()
    return {(q, JobState(s)): n for q, s, n in rows}
