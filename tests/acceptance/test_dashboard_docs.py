"""docs/dashboard.md: its sample builds a working app, and its tables name what the code has."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from offload.dashboard import DashboardSettings, dashboard_router
from offload.dashboard.security import CSP

DOC = Path(__file__).resolve().parents[2] / "docs" / "dashboard.md"
TEXT = DOC.read_text(encoding="utf-8")
SAMPLES = re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)


async def test_the_sample_serves_the_dashboard_behind_basic_auth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    [sample] = SAMPLES
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "docs_sample"}
    exec(compile(sample, str(DOC), "exec"), namespace)
    app, jobs = namespace["app"], namespace["jobs"]
    transport = httpx.ASGITransport(app)
    async with jobs, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert 401 == (await client.get("/dashboard/")).status_code
        page = await client.get("/dashboard/", auth=("admin", "a-long-password"))
        assert 200 == page.status_code
        assert "Jobs per queue and state" in page.text


def test_the_argument_table_names_every_argument() -> None:
    documented = re.findall(r"^\| `(\w+)` \|", TEXT, re.MULTILINE)
    params = [p for p in inspect.signature(dashboard_router).parameters if p != "jobs"]
    assert sorted(params) == sorted(d for d in documented if d in params)
    assert set(params) <= set(documented)


def test_settings_and_headers_are_the_codes() -> None:
    for name in DashboardSettings.model_fields:
        if name != "secret":
            assert f"OFFLOAD_DASHBOARD_{name.upper()}" in TEXT
    assert "OFFLOAD_DASHBOARD_SECRET" in TEXT
    assert CSP.startswith("default-src 'none'; script-src 'self'; style-src 'self';")
    assert "default-src\n  'none'; script-src 'self'; style-src 'self';" in TEXT
    for image in re.findall(r"\]\((images/[^)]+)\)", TEXT):
        assert (DOC.parent / image).is_file(), image
