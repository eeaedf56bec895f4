"""The reference service against its own OpenAPI schema: schemathesis, over real HTTP.

Every operation is fuzzed with the API token: no answer may be a 5xx, and every status code
and response body must be one the schema documents, so that a client generated from the
schema knows every answer it can get. Under CI the run is derandomized (tests/conftest.py
loads hypothesis's "ci" profile), so it is the same run every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.notify_server import TOKEN, Server, notify_server

# What the service promises its clients. Not among them: schemathesis's guesses of which
# schema-valid values a server must accept (a page cursor is a string in the schema, yet only
# one this API handed out is accepted).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
]
# Per operation and kind of data: enough to reach every documented answer of this small API
# (unauthenticated, malformed, unknown ids, bodies of every shape) well within a minute.
EXAMPLES = 25


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with notify_server(tmp_path_factory.mktemp("notify")) as running:
        yield running


def test_every_answer_is_documented_and_none_is_a_5xx(server: Server) -> None:
    """Each operation with valid and with invalid input (the invalid must be refused with a
    documented 4xx), and with valid input but no token (a documented 401 where one is due)."""
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 9, [op.label for op in operations]
    token = {"Authorization": f"Bearer {TOKEN}"}
    runs = [
        (GenerationMode.POSITIVE, token),
        (GenerationMode.NEGATIVE, token),
        (GenerationMode.POSITIVE, {}),
    ]
    for operation in operations:
        for mode, headers in runs:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
            def check(case: Case[Any], headers: dict[str, str]) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

            try:
                check(headers=headers)
            except Unsatisfiable:
                # No invalid input exists for an operation without parameters or body.
                if mode is not GenerationMode.NEGATIVE:
                    raise
