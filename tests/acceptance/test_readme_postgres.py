"""The README's PostgreSQL endpoint works as written, against the real server: an order and
its confirmation job commit together, and an order that fails to insert leaves no job."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from offload.stores import ClaimRequest
from tests.stores.conftest import POSTGRES_URL, drop_postgres_schema, postgres_unreachable

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
[ORDERS] = [b for b in BLOCKS if "SHOP_DATABASE" in b]
WRITTEN = '"postgresql://shop@127.0.0.1:5432/shop"'


@pytest.fixture
async def service() -> AsyncIterator[dict[str, Any]]:
    """The block run with its database pointed at a schema of the test's own: the shop's
    tables through search_path, offload's through ``schema=``."""
    schema = f"test_{uuid.uuid4().hex}"
    try:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        postgres_unreachable(exc)
    async with conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            f'CREATE TABLE "{schema}".orders (id serial PRIMARY KEY, '
            "item text NOT NULL CHECK (item <> ''))"
        )
    assert WRITTEN in ORDERS
    code = ORDERS.replace(WRITTEN, f'"{POSTGRES_URL}?options=-csearch_path%3D{schema}"')
    code = code.replace("Offload(SHOP_DATABASE)", f'Offload(SHOP_DATABASE + "&schema={schema}")')
    namespace: dict[str, Any] = {}
    exec(compile("from offload import Offload\n" + code, "README.md", "exec"), namespace)
    try:
        yield namespace
    finally:
        await namespace["shop"].close()
        await namespace["engine"].dispose()
        await drop_postgres_schema(schema)


async def test_an_order_and_its_job_commit_together(service: dict[str, Any]) -> None:
    transport = httpx.ASGITransport(app=service["shop_api"])
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        ok = await client.post("/orders", json={"item": "book"})
        # The CHECK refuses an empty item: the insert fails, the transaction rolls back.
        with pytest.raises(Exception, match="orders_item_check"):
            await client.post("/orders", json={"item": ""})
    assert 202 == ok.status_code, ok.text
    body = ok.json()
    claimed = await service["shop"].store.claim(ClaimRequest("w", 30.0, 10))
    assert [body["job_id"]] == [j.id for j in claimed]
    assert {"order_id": body["order_id"]} == json.loads(claimed[0].kwargs)
