"""The reference service's chunked CSV path: a file over ``NOTIFY_CHUNK_MB`` is split on row
boundaries, its chunks cleaned in parallel by a chord and merged, publishing byte for byte
what one ``clean_csv`` of the whole file publishes. Through the ASGI app with its embedded
worker on a SQLite file, and the three steps called directly on many generated files."""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from examples.notify.chunking import clean_range, merge_parts, plan_chunks
from examples.notify.cleaning import OUTPUTS, CsvError, clean_csv

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINISHED = {"succeeded", "failed", "cancelled"}
# About 4 KiB: the files below make 5 to 20 chunks.
CHUNK_MB = "0.004"


def fresh_service() -> ModuleType:
    """Import the service anew, so that it reads the environment this test set."""
    sys.modules.pop("examples.notify.app", None)
    return importlib.import_module("examples.notify.app")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OFFLOAD_URL", db_url)
    monkeypatch.setenv("NOTIFY_API_TOKEN", TOKEN)
    monkeypatch.setenv("NOTIFY_LOG", "off")
    monkeypatch.setenv("NOTIFY_CHUNK_MB", CHUNK_MB)
    for setting in ("HOST", "PORT", "TLS", "SENDER"):
        monkeypatch.delenv(f"OFFLOAD_SMTP_{setting}", raising=False)


async def started(service: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(service.app)
    async with (
        service.app.router.lifespan_context(service.app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


@pytest.fixture
async def service(environment: None) -> ModuleType:
    return fresh_service()


@pytest.fixture
async def client(service: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    async for client in started(service):
        yield client


def messy_csv(rows: int, seed: int = 7) -> bytes:
    """CRLF rows whose long quoted field holds line breaks (most of each row's bytes, so
    that chunk boundaries fall inside it), repeats far apart, missing values, mixed types."""
    rnd = random.Random(seed)
    lines = ["\ufeffid; Name ;note;score;when"]
    for row in range(rows):
        if row > 50 and rnd.random() < 0.15:
            lines.append(lines[rnd.randrange(1, len(lines))])  # a repeat from anywhere before
            continue
        note = f'"first line {row}\r\nsecond;  line\nthird {"x" * rnd.randrange(40, 160)}"'
        score = rnd.choice(["1", "2.5", "NA", "", "7", "-"])
        when = rnd.choice(["2026-01-02", "2026-01-03 10:00", "N/A"])
        lines.append(f"{row % 400};  name {row % 37} ;{note};{score};{when}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def expected(tmp: Path, data: bytes) -> Path:
    source, out = tmp / "whole.csv", tmp / "whole"
    source.write_bytes(data)
    clean_csv(source, out)
    return out


async def upload(client: httpx.AsyncClient, data: bytes) -> dict[str, Any]:
    answer = await client.post(
        "/files", files={"file": ("big.csv", data, "text/csv")}, headers=AUTH
    )
    assert 202 == answer.status_code, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            body: dict[str, Any] = (await client.get(f"/jobs/{job_id}", headers=AUTH)).json()
            if body["state"] in FINISHED:
                return body
            await asyncio.sleep(0.02)


def inside_quotes(data: bytes, offset: int) -> bool:
    """Whether ``offset`` falls inside a quoted field (these files escape no quotes)."""
    return data[:offset].count(b'"') % 2 == 1


async def test_a_big_file_is_cleaned_by_a_chord_into_the_same_bytes(
    client: httpx.AsyncClient, service: ModuleType, tmp_path: Path
) -> None:
    data = messy_csv(300)
    whole = expected(tmp_path, data)
    chunk = int(float(CHUNK_MB) * (1 << 20))
    count = -(-len(data) // chunk)
    bounds = [len(data) * i // count for i in range(1, count)]
    assert any(inside_quotes(data, b) for b in bounds), "no boundary inside a quoted field"

    accepted = await upload(client, data)
    job = await finished(client, accepted["job_id"])
    assert "succeeded" == job["state"], job
    tasks = [step["task"] for step in job["steps"]]
    chunks = ["notify.clean_chunk"] * count
    assert ["notify.split_file", *chunks, "notify.merge_chunks"] == tasks
    assert {"succeeded"} == {step["state"] for step in job["steps"]}
    handle = await service.jobs.get(accepted["job_id"])
    assert [step.id for step in await handle.steps()] == [s["id"] for s in job["steps"]]
    assert json.loads((whole / "summary.json").read_text()) == job["result"]

    status = (await client.get(accepted["status_url"], headers=AUTH)).json()
    assert ("succeeded", 1.0, None) == (
        status["status"],
        status["progress"]["fraction"],
        status["error"],
    )
    assert json.loads((whole / "summary.json").read_text()) == status["summary"]
    assert status["summary"]["duplicates_dropped"] > 0
    for name in ("cleaned.csv", "data.jsonl"):
        got = await client.get(status["downloads"][name], headers=AUTH)
        assert (whole / name).read_bytes() == got.content, name
    outputs = Path("notify-data/outputs") / accepted["id"]
    assert (whole / "summary.json").read_bytes() == (outputs / "summary.json").read_bytes()
    # The parts are gone once the merge has published.
    assert not (Path("notify-data/uploads") / accepted["id"] / "chunks").exists()


async def test_a_small_file_is_one_job_as_before(client: httpx.AsyncClient) -> None:
    data = b"a,b\n1,2\n1,2\n"
    accepted = await upload(client, data)
    job = await finished(client, accepted["job_id"])
    assert ("succeeded", "notify.clean_file", None) == (job["state"], job["task"], job["steps"])


async def test_a_broken_big_file_fails_with_the_line_one_job_names(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    data = messy_csv(300).replace(b"\r\n12;", b"\r\n12;x;y;z;w;v;u;", 1)
    source = tmp_path / "broken.csv"
    source.write_bytes(data)
    with pytest.raises(CsvError) as raised:
        clean_csv(source, tmp_path / "whole")
    accepted = await upload(client, data)
    await finished(client, accepted["job_id"])
    status = (await client.get(accepted["status_url"], headers=AUTH)).json()
    assert ("failed", {}) == (status["status"], status["downloads"])
    assert f"the file cannot be read as CSV: {raised.value}" == status["error"]
    assert not (Path("notify-data/outputs") / accepted["id"]).exists()


async def test_cancelling_the_workflow_cancels_every_step(
    monkeypatch: pytest.MonkeyPatch, environment: None
) -> None:
    monkeypatch.setenv("NOTIFY_EMBEDDED_WORKER", "false")
    async for client in started(fresh_service()):
        accepted = await upload(client, messy_csv(100))
        status = (await client.get(accepted["status_url"], headers=AUTH)).json()
        assert ("queued", None) == (status["status"], status["progress"])
        answer = await client.post(f"/jobs/{accepted['job_id']}/cancel", headers=AUTH)
        assert 200 == answer.status_code, answer.text
        job = (await client.get(f"/jobs/{accepted['job_id']}", headers=AUTH)).json()
        assert {"cancelled"} == {step["state"] for step in job["steps"]}
        status = (await client.get(accepted["status_url"], headers=AUTH)).json()
        assert ("cancelled", {}) == (status["status"], status["downloads"])


async def test_a_store_without_workflows_gets_the_one_job(
    monkeypatch: pytest.MonkeyPatch, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    class NoStoreHasIt:
        pass

    monkeypatch.setattr("examples.notify.uploads.Workflows", NoStoreHasIt)
    data = messy_csv(100)
    accepted = await upload(client, data)
    job = await finished(client, accepted["job_id"])
    assert ("succeeded", "notify.clean_file", None) == (job["state"], job["task"], job["steps"])
    whole = expected(tmp_path, data)
    cleaned = await client.get(f"/files/{accepted['id']}/cleaned.csv", headers=AUTH)
    assert (whole / "cleaned.csv").read_bytes() == cleaned.content


VALUES = ["1", "2", "1.5", "x", "NA", "", " a  b ", '"q\nuo\r\nted"', '"a,b"', "true", "007"]
MORE = ["2026-01-01", "2026-01-01 10:00", "é", '"x""y"', " ", "yes", "1e5"]


def generated(rnd: random.Random) -> bytes:
    width, delimiter = rnd.randint(1, 4), rnd.choice(",;")
    newline = rnd.choice(["\n", "\r\n", "\r"])
    lines = [delimiter.join(f"h{i}" for i in range(width))]
    for _ in range(rnd.randint(0, 60)):
        fields = width if rnd.random() > 0.03 else width + rnd.choice([-1, 1])
        pool = VALUES[:8] if rnd.random() < 0.7 else VALUES + MORE
        lines.append(delimiter.join(rnd.choice(pool) for _ in range(fields)))
        if rnd.random() < 0.1:
            lines.append(lines[rnd.randrange(1, len(lines))])
        if rnd.random() < 0.03:
            lines.append("")
    text = newline.join(lines) + (newline if rnd.random() < 0.8 else "")
    kind = rnd.choice(["utf-8", "cp1252", "bom"])
    if kind == "cp1252":
        return text.encode("cp1252", "replace")
    return (b"\xef\xbb\xbf" if kind == "bom" else b"") + text.encode("utf-8")


def both_ways(tmp: Path, data: bytes, count: int) -> str:
    """Cleans ``data`` whole and in ``count`` chunks; the outputs or errors must match."""
    source = tmp / "in.csv"
    source.write_bytes(data)
    for path in ("whole", "chunked", "work"):
        if (tmp / path).exists():
            shutil.rmtree(tmp / path)
    whole: object
    try:
        whole = clean_csv(source, tmp / "whole")
    except CsvError as exc:
        whole = str(exc)
    try:
        plan = plan_chunks(source, count)
        parts = [clean_range(source, plan, i, tmp / "work") for i in range(count)]
        chunked: object = merge_parts(parts, tmp / "work", tmp / "chunked")
    except CsvError as exc:
        chunked = str(exc)
    if isinstance(whole, str) or isinstance(chunked, str):
        assert whole == chunked, data
        return "error"
    for name in OUTPUTS:
        assert (tmp / "whole" / name).read_bytes() == (tmp / "chunked" / name).read_bytes(), (
            name,
            count,
            data,
        )
    return "same"


def test_many_generated_files_clean_the_same_in_chunks(tmp_path: Path) -> None:
    rnd = random.Random(20261207)
    outcomes = [both_ways(tmp_path, generated(rnd), rnd.randint(1, 9)) for _ in range(300)]
    assert outcomes.count("same") > 150, outcomes.count("same")
    assert outcomes.count("error") > 20


def test_whole_file_rules_hold_across_chunks(tmp_path: Path) -> None:
    """Duplicates far apart, a column past the 10 000 distinct cap only all chunks together
    reach, a column that turns text in its last chunk, a non-UTF-8 byte past the 64 KiB
    sample (the whole file is then cp1252), and a file starting with two BOMs."""
    rows = ["id,name,note,v"]
    for i in range(30_000):
        value = "x" if i == 29_990 else ("1" if i % 2 else "2.5")
        rows.append(f'{i % 12_000},"n {i % 50}","multi\nline {i % 3}",{value}')
    data = ("\n".join(rows) + "\n").encode()
    cp1252 = data[:100_000] + "é".encode("cp1252") + data[100_000:]
    for case in (data, cp1252, b"\xef\xbb\xbf\xef\xbb\xbf" + data):
        assert "same" == both_ways(tmp_path, case, 7)
    summary = json.loads((tmp_path / "chunked" / "summary.json").read_text())
    assert 10_000 == summary["columns"][0]["distinct_capped"]
    assert "text" == summary["columns"][3]["type"]
    plan = plan_chunks(tmp_path / "in.csv", 7)
    assert 7 == len({start for start, _, _ in plan["ranges"]})


def test_a_file_with_fewer_rows_than_chunks_leaves_the_rest_empty(tmp_path: Path) -> None:
    data = b'a,b\n1,"one\nrecord\nover lines"\n'
    assert "same" == both_ways(tmp_path, data, 5)
    ranges = plan_chunks(tmp_path / "in.csv", 5)["ranges"]
    assert [[4, len(data), 2]] + [[len(data), len(data), 5]] * 4 == ranges
