"""docs/workflows.md: its sample builds and stores the workflow it describes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from offload import JobState
from offload.records import WaitingReason

DOC = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"
SAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


async def test_the_sample_stores_its_workflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two URLs: two chains of two steps, the merge, the mail and the handler, stored at
    once; only the fetches are runnable, and the same key stores nothing more."""
    monkeypatch.chdir(tmp_path)  # the sample's jobs.db
    [sample] = SAMPLES
    namespace: dict[str, Any] = {"__name__": "docs_workflows"}
    exec(compile(sample, str(DOC), "exec"), namespace)
    jobs = namespace["jobs"]
    async with jobs:
        workflow_id = await namespace["start"](["https://a.example", "https://b.example"])
        handle = await jobs.get(workflow_id)
        steps = await handle.steps()
        tasks = sorted(step.task.rsplit(".", 1)[-1] for step in steps)
        assert ["alert", "clean", "clean", "fetch", "fetch", "mail_report", "merge"] == tasks
        runnable = [s.task for s in steps if s.waiting_reason is not WaitingReason.INPUTS]
        assert {JobState.QUEUED} == {s.state for s in steps}
        assert ["fetch", "fetch"] == [t.rsplit(".", 1)[-1] for t in runnable]
        assert workflow_id == await namespace["start"](["https://a.example"])
