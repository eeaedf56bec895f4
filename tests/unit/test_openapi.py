"""The OpenAPI schema lists every answer the adapter's routes can give (401 behind auth, 413
for a request too large, 503 with Retry-After while the store is down), so a client
generated from it knows them. The service's schema is fuzzed against the running service in
tests/integration/test_notify_schemathesis.py; here each entry is read as written."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from offload import Offload
from offload.fastapi import ENQUEUE_RESPONSES, Background, jobs_router

DETAIL = {"$ref": "#/components/schemas/Detail"}
RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}


def operations(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": op
        for path, ops in schema["paths"].items()
        if path.startswith(prefix)
        for method, op in ops.items()
    }


def body_schema(response: dict[str, Any]) -> Any:
    return response["content"]["application/json"]["schema"]


def jobs_app(**router: Any) -> FastAPI:
    jobs = Offload("memory://", embedded_worker=False)

    @jobs.task(name="tests.greet")
    async def greet(name: str) -> None:
        pass

    app = FastAPI()
    app.include_router(jobs_router(jobs, prefix="/jobs", **router))

    @app.post("/greet", status_code=202, responses=ENQUEUE_RESPONSES)
    async def post_greet(background: Background) -> dict[str, str]:
        job = await background.add_task(greet, "ada")
        return {"job_id": job.id}

    return app


def test_every_route_behind_auth_documents_401_and_503() -> None:
    def auth() -> None:
        pass

    found = operations(jobs_app(auth=auth).openapi(), "/jobs")
    assert 8 == len(found), sorted(found)
    for label, op in found.items():
        responses = op["responses"]
        assert DETAIL == body_schema(responses["401"]), label
        assert DETAIL == body_schema(responses["503"]), label
        assert {"Retry-After": RETRY_AFTER} == responses["503"]["headers"], label


def test_an_anonymous_jobs_api_documents_no_401() -> None:
    found = operations(jobs_app(allow_anonymous=True).openapi(), "/jobs")
    assert found
    for label, op in found.items():
        assert "401" not in op["responses"], label
        assert "503" in op["responses"], label


def test_an_endpoint_enqueuing_documents_413_429_and_503() -> None:
    responses = jobs_app(allow_anonymous=True).openapi()["paths"]["/greet"]["post"]["responses"]
    assert {"202", "413", "429", "503"} == set(responses)
    assert DETAIL == body_schema(responses["413"])
    assert DETAIL == body_schema(responses["429"])
    assert {"Retry-After": RETRY_AFTER} == responses["429"]["headers"]
    assert {"Retry-After": RETRY_AFTER} == responses["503"]["headers"]


@pytest.fixture
def notify_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OFFLOAD_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("NOTIFY_API_TOKEN", "test-token")
    monkeypatch.setenv("NOTIFY_LOG", "off")
    sys.modules.pop("examples.notify.app", None)
    service = importlib.import_module("examples.notify.app")
    schema: dict[str, Any] = service.app.openapi()
    return schema


def test_the_service_documents_each_answer_of_each_route(notify_schema: dict[str, Any]) -> None:
    found = {label: set(op["responses"]) for label, op in operations(notify_schema).items()}
    assert {"202", "400", "409", "413", "422", "429", "503"} == found.pop("POST /register")
    assert {"200"} == found.pop("GET /health")
    assert {"200", "503"} == found.pop("GET /healthz")
    assert {"202", "400", "401", "413", "422", "429", "503"} == found.pop("POST /webhooks/payments")
    for label in ("POST /send-notification", "POST /orders", "POST /files", "POST /images"):
        assert {"202", "400", "401", "413", "422", "429", "503"} == found.pop(label), label
    assert {"200", "401", "503"} == found.pop("GET /stats")
    for label in ("GET /files/{upload_id}", "GET /images/{upload_id}"):
        assert {"200", "401", "404", "422", "503"} == found.pop(label), label
    for label in ("GET /files/{upload_id}/{name}", "GET /images/{upload_id}/{name}"):
        assert {"200", "401", "404", "422"} == found.pop(label), label
    for label, codes in found.items():
        assert label.split()[1].startswith("/jobs"), label
        assert {"401", "503"} <= codes, label
        assert codes & {"200", "204"}, label
