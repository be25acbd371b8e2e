"""Schemathesis over the app's own OpenAPI document, through a real server.

With a valid key and without one: no 5xx, every status is documented, every
response matches its documented schema, and every error is in the one shape.
The number of examples per operation is bounded to keep the run short.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 12


def _check_error_shape(response) -> None:
    if response.status_code >= 400 and response.request.method != "HEAD":
        body = response.json()
        assert set(body) == {"code", "description"}, body
        assert isinstance(body["code"], str) and body["code"].isupper()


def _fuzz(base_url: str, headers: dict[str, str], examples: int) -> list[str]:
    """Run every operation of the live OpenAPI document; return the failures."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/api")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case) -> None:
            response = case.call_and_validate(
                base_url=base_url, headers=headers, checks=CHECKS, timeout=30
            )
            _check_error_shape(response)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures


def test_every_operation_with_a_key(live_server):
    base = live_server.url.removesuffix("/api/v1")
    failures = _fuzz(base, {"Authorization": f"Bearer {live_server.key}"}, EXAMPLES)
    assert not failures, "\n\n".join(failures)


def test_every_operation_without_a_key(live_server):
    failures = _fuzz(live_server.url.removesuffix("/api/v1"), {}, 3)
    assert not failures, "\n\n".join(failures)
