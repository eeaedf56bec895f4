"""The reference service as a whole, over real HTTP: uvicorn on loopback with its embedded
worker, the development mail sink in a process of its own, a real SQLite job store and
database. Each endpoint's happy path and its bad inputs, and the mail as it arrives."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from PIL import Image

from offload.errors import StoreUnavailable
from offload.stores import open_store
from tests.integration.notify_server import (
    TOKEN,
    Server,
    SinkProcess,
    mail_sink_process,
    notify_server,
)
from tests.stores.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    drop_postgres_schema,
    drop_redis_keys,
    postgres_unreachable,
    postgres_url,
    redis_unreachable,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_SECRET = "test-webhook-secret"
FINISHED = {"succeeded", "failed", "cancelled"}


def stores(kind: str, tmp: Path, prefix: str) -> dict[str, str]:
    """The service's settings for its jobs on ``kind``; on PostgreSQL its own data too, in
    the same database, so that an order commits with its confirmation job."""
    if kind == "sqlite":
        return {"OFFLOAD_URL": f"sqlite:///{tmp / 'jobs.db'}"}
    if kind == "redis":
        url = f"{REDIS_URL}?prefix={prefix}&op_timeout=2"
        try:
            asyncio.run(_probe(url))
        except StoreUnavailable as exc:
            redis_unreachable(exc)
        return {"OFFLOAD_URL": url}
    try:
        asyncio.run(_probe(postgres_url(prefix)))
    except StoreUnavailable as exc:
        postgres_unreachable(exc)
    data = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://")
    return {"OFFLOAD_URL": postgres_url(prefix),
            "NOTIFY_DATABASE_URL": f"{data}?options=-csearch_path%3D{prefix}"}  # fmt: skip


async def _probe(url: str) -> None:
    """Open the store once (a PostgreSQL one creates its schema, where the data goes too)."""
    store = open_store(url)
    await store.open()
    await store.close()


@pytest.fixture(scope="module", params=["sqlite", "redis", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory, kind: str) -> Iterator[SinkProcess]:
    """A sink per store kind, so that each run counts only its own mail."""
    with mail_sink_process(tmp_path_factory.mktemp(f"sink-{kind}")) as running:
        yield running


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, sink: SinkProcess, kind: str
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"notify-{kind}")
    prefix = f"test_{uuid4().hex}"
    env = {**sink.smtp_env(), "NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "NOTIFY_MAX_UPLOAD_MB": "2", "NOTIFY_ADMIN_EMAIL": "boss@example.com",
           **stores(kind, tmp, prefix)}  # fmt: skip
    try:
        with notify_server(tmp, **env) as running:
            yield running
    finally:
        if kind == "redis":
            asyncio.run(drop_redis_keys(prefix))
        if kind == "postgres":
            asyncio.run(drop_postgres_schema(prefix))


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def finished(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=AUTH).json()
        if body["state"] in FINISHED:
            return body
        assert time.monotonic() < deadline, f"job {job_id} still {body['state']}"
        time.sleep(0.05)


def mails_to(sink: SinkProcess, address: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        found = [m for m in sink.messages() if address in m["recipients"]]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} mails to {address}"
        time.sleep(0.05)


def fields(response: httpx.Response) -> list[list[str | int]]:
    assert 422 == response.status_code, response.text
    return [e["loc"] for e in response.json()["detail"]]


class TestRegister:
    def test_welcome_mail_from_the_template_and_409_for_a_second(
        self, client: httpx.Client, sink: SinkProcess
    ) -> None:
        first = client.post("/register", json={"email": "grace@example.com", "name": "Grace"})
        assert 202 == first.status_code, first.text
        assert "succeeded" == finished(client, first.json()["job_id"])["state"]
        [mail] = mails_to(sink, "grace@example.com")
        assert "Welcome, Grace!" == mail["subject"]
        assert "thanks for registering" in str(mail["html"])
        again = client.post("/register", json={"email": "GRACE@example.com", "name": "G"})
        assert 409 == again.status_code
        assert first.json()["job_id"] == again.json()["job_id"]

    def test_bad_input_names_the_field(self, client: httpx.Client) -> None:
        assert [["body", "email"]] == fields(client.post("/register", json={"name": "x"}))


class TestNotifications:
    def test_one_job_per_recipient_and_a_retry_sends_nothing_twice(
        self, client: httpx.Client, sink: SinkProcess
    ) -> None:
        to = ["n1@example.com", "n2@example.com", "N1@example.com"]
        context = {"title": "Maintenance <tonight>", "body": "Down 10 minutes."}
        body = {"to": to, "template": "announcement", "context": context}
        headers = {**AUTH, "Idempotency-Key": "announce-1"}
        first = client.post("/send-notification", json=body, headers=headers)
        assert 202 == first.status_code, first.text
        assert ["n1@example.com", "n2@example.com"] == first.json()["recipients"]
        again = client.post("/send-notification", json=body, headers=headers)
        assert first.json()["job_ids"] == again.json()["job_ids"]
        for job_id in first.json()["job_ids"]:
            assert "succeeded" == finished(client, job_id)["state"]
        [mail] = mails_to(sink, "n1@example.com")
        assert "Maintenance <tonight>" == mail["subject"]
        assert "Maintenance &lt;tonight&gt;" in str(mail["html"])  # escaped in the HTML
        time.sleep(0.3)
        assert 1 == len(mails_to(sink, "n2@example.com"))

    def test_subject_and_text_form(self, client: httpx.Client, sink: SinkProcess) -> None:
        body = {"to": ["plain@example.com"], "subject": "Hi", "text": "Just text."}
        answer = client.post("/send-notification", json=body, headers=AUTH)
        assert 202 == answer.status_code, answer.text
        [mail] = mails_to(sink, "plain@example.com")
        assert ("Hi", "Just text.") == (mail["subject"], str(mail["text"]).strip())

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"to": ["a@example.com"], "template": "announcement", "context": {}}, "context"),
            ({"to": ["a@example.com"], "template": "nope"}, "template"),
            ({"to": [], "subject": "s", "text": "t"}, "to"),
            ({"to": ["not-an-address"], "subject": "s", "text": "t"}, "to"),
        ],
    )
    def test_bad_input_names_the_field(
        self, client: httpx.Client, body: dict[str, Any], field: str
    ) -> None:
        locs = fields(client.post("/send-notification", json=body, headers=AUTH))
        assert all(loc[:2] == ["body", field] for loc in locs), locs

    def test_neither_form_is_refused(self, client: httpx.Client) -> None:
        answer = client.post("/send-notification", json={"to": ["a@example.com"]}, headers=AUTH)
        assert 422 == answer.status_code
        assert "either a template" in answer.text


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Notify-Signature": f"sha256={digest}", "Content-Type": "application/json"}


class TestOrdersAndPayments:
    def test_order_confirmation_then_a_payment_delivered_three_times_is_processed_once(
        self, client: httpx.Client, sink: SinkProcess, kind: str
    ) -> None:
        buyer = f"buyer-{kind}@example.com"
        order = {"email": buyer,
                 "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price": "12.50"},
                           {"sku": "PEN", "quantity": 1, "unit_price": "1.99"}]}  # fmt: skip
        created = client.post("/orders", json=order, headers=AUTH)
        assert 202 == created.status_code, created.text
        accepted = created.json()
        together = kind == "postgres"
        assert ("26.99", together) == (str(accepted["total"]), accepted["same_transaction"])
        assert "succeeded" == finished(client, accepted["job_id"])["state"]
        [confirmation] = mails_to(sink, buyer)
        assert f"Your order #{accepted['order_id']}" == confirmation["subject"]
        assert "26.99" in str(confirmation["html"])

        order_id = accepted["order_id"]
        payment = {"id": f"evt_{order_id}", "type": "payment.succeeded",
                   "order_id": order_id, "amount": "26.99"}  # fmt: skip
        event = json.dumps(payment).encode()
        answers = [client.post("/webhooks/payments", content=event, headers=sign(event))
                   for _ in range(3)]  # fmt: skip
        assert [202, 202, 202] == [a.status_code for a in answers], answers[0].text
        assert 1 == len({a.json()["job_id"] for a in answers})
        result = finished(client, answers[0].json()["job_id"])
        assert ("succeeded", True) == (result["state"], result["result"]["paid"])
        assert "succeeded" == finished(client, result["result"]["receipt_job"])["state"]
        mails = mails_to(sink, buyer, 2)
        time.sleep(0.3)
        assert 2 == len(mails_to(sink, buyer, 2))
        assert f"Receipt for order #{accepted['order_id']}" == mails[1]["subject"]

    def test_a_bad_signature_is_401(self, client: httpx.Client) -> None:
        event = b'{"id": "evt_x", "type": "payment.succeeded", "order_id": 1, "amount": "1"}'
        for headers in ({}, sign(event, "wrong-secret"), sign(event + b" ")):
            answer = client.post("/webhooks/payments", content=event, headers=headers)
            assert 401 == answer.status_code

    def test_a_signed_event_of_the_wrong_shape_is_422_naming_the_field(
        self, client: httpx.Client
    ) -> None:
        event = b'{"id": "evt_y", "type": "payment.refunded", "order_id": 1, "amount": "1"}'
        answer = client.post("/webhooks/payments", content=event, headers=sign(event))
        assert [["body", "type"]] == fields(answer)

    @pytest.mark.parametrize(
        ("items", "field"),
        [([], "items"), ([{"sku": "A", "quantity": 0, "unit_price": "1"}], "items")],
    )
    def test_bad_orders_name_the_field(
        self, client: httpx.Client, items: list[Any], field: str
    ) -> None:
        body = {"email": "b@example.com", "items": items}
        locs = fields(client.post("/orders", json=body, headers=AUTH))
        assert all(loc[:2] == ["body", field] for loc in locs), locs


MESSY = (
    "\ufeffName ; Age;  Joined  ;Name\r\n"
    "  Ada   Lovelace ;36;1843-01-01;x\r\n"
    "\r\n"
    "Grace;NA;1906-12-09;y\r\n"
    "  Ada   Lovelace ;36;1843-01-01;x\r\n"
)


class TestFiles:
    def upload(self, client: httpx.Client, content: bytes, name: str = "in.csv") -> Any:
        files = {"file": (name, content, "text/csv")}
        answer = client.post("/files", files=files, headers=AUTH)
        assert 202 == answer.status_code, answer.text
        return answer.json()

    def test_a_messy_file_is_cleaned_with_progress_summary_and_downloads(
        self, client: httpx.Client
    ) -> None:
        accepted = self.upload(client, MESSY.encode())
        assert "succeeded" == finished(client, accepted["job_id"])["state"]
        status = client.get(f"/files/{accepted['id']}", headers=AUTH).json()
        assert "succeeded" == status["status"]
        assert 1.0 == status["progress"]["fraction"]
        summary = status["summary"]
        assert (1, 2) == (summary["duplicates_dropped"], summary["rows_out"])
        cleaned = client.get(status["downloads"]["cleaned.csv"], headers=AUTH)
        assert 200 == cleaned.status_code
        assert cleaned.text.splitlines()[1].startswith("Ada Lovelace,36,1843-01-01")
        lines = client.get(status["downloads"]["data.jsonl"], headers=AUTH).text.splitlines()
        assert [36, None] == [json.loads(line)["Age"] for line in lines]

    def test_a_broken_file_fails_with_its_line_and_publishes_nothing(
        self, client: httpx.Client
    ) -> None:
        accepted = self.upload(client, b"a,b\n1,2\n3,4,5\n")
        job = finished(client, accepted["job_id"])
        assert "failed" == job["state"]
        assert "line 3" in job["error"]["message"]
        status = client.get(f"/files/{accepted['id']}", headers=AUTH).json()
        assert ("failed", {}) == (status["status"], status["downloads"])
        missing = client.get(f"/files/{accepted['id']}/cleaned.csv", headers=AUTH)
        assert 404 == missing.status_code

    def test_limits_and_unknown_ids(self, client: httpx.Client) -> None:
        big = client.post("/files", files={"file": ("big.csv", b"x" * (3 << 20))}, headers=AUTH)
        assert 413 == big.status_code
        assert [["body", "file"]] == fields(client.post("/files", headers=AUTH, data={"a": "1"}))
        assert [["body", "file"]] == fields(
            client.post("/files", files={"file": ("e.csv", b"")}, headers=AUTH)
        )
        assert 404 == client.get("/files/" + "0" * 32, headers=AUTH).status_code
        assert 404 == client.get("/files/nope/cleaned.csv", headers=AUTH).status_code


class TestImages:
    def test_thumbnails_in_three_sizes(self, client: httpx.Client) -> None:
        picture = io.BytesIO()
        Image.new("RGB", (1600, 900), (200, 30, 60)).save(picture, "PNG")
        files = {"file": ("red.png", picture.getvalue(), "image/png")}
        accepted = client.post("/images", files=files, headers=AUTH)
        assert 202 == accepted.status_code, accepted.text
        job = finished(client, accepted.json()["job_id"])
        assert "succeeded" == job["state"], job["error"]
        status = client.get(f"/images/{accepted.json()['id']}", headers=AUTH).json()
        sizes = []
        for url in status["downloads"].values():
            thumb = client.get(url, headers=AUTH)
            assert "image/jpeg" == thumb.headers["content-type"]
            sizes.append(Image.open(io.BytesIO(thumb.content)).size)
        assert [(64, 36), (256, 144), (1024, 576)] == sizes

    def test_a_file_that_is_not_an_image_is_422(self, client: httpx.Client) -> None:
        files = {"file": ("fake.png", b"not really a png", "image/png")}
        assert [["body", "file"]] == fields(client.post("/images", files=files, headers=AUTH))


class TestOperations:
    def test_stats_are_built_by_their_job(self, client: httpx.Client) -> None:
        first = client.get("/stats", headers=AUTH).json()
        if first["stats"] is None:
            finished(client, first["refresh_job"])
        stats = client.get("/stats", headers=AUTH).json()
        assert {"users", "orders", "paid_orders", "files", "images"} <= set(stats["stats"])

    def test_healthz_checks_both_stores(self, client: httpx.Client) -> None:
        assert {"status": "ok", "store": "ok", "database": "ok"} == client.get("/healthz").json()

    def test_the_dashboard_shows_the_captured_mail(
        self, client: httpx.Client, sink: SinkProcess
    ) -> None:
        client.post("/register", json={"email": "dash@example.com", "name": "Dash"})
        mails_to(sink, "dash@example.com")
        page = client.get("/dashboard/mail", auth=("admin", TOKEN))
        assert 200 == page.status_code
        assert "Welcome, Dash!" in page.text

    def test_every_route_but_the_public_ones_refuses_a_missing_or_wrong_token(
        self, client: httpx.Client
    ) -> None:
        public = {"/register", "/health", "/healthz", "/webhooks/payments"}
        schema = client.get("/openapi.json").json()
        checked = 0
        for path, operations in schema["paths"].items():
            if path in public:
                continue
            url = path.replace("{job_id}", "x").replace("{upload_id}", "x")
            url = url.replace("{name}", "x")
            for method in operations:
                for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                    answer = client.request(method, url, headers=headers)
                    assert 401 == answer.status_code, (method, url, answer.text)
                    checked += 1
        for path in ("/metrics", "/dashboard/"):
            assert 401 == client.get(path).status_code, path
            assert 401 == client.get(path, headers={"Authorization": "Bearer no"}).status_code
        assert checked >= 30
