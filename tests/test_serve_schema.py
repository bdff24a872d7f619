"""schemathesis against the app's own OpenAPI schema, in-process over ASGI.

The app runs around a cheap fake detector (milliseconds per call), so hypothesis can try many
inputs quickly; what is fuzzed is the HTTP layer, validation, limits and the response models,
none of which depend on the model. Every operation is fuzzed, uploads (multipart) included.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tests.serve_helpers import fake_served_model

from valuedetect.serve.app import create_app
from valuedetect.serve.settings import ServeSettings

# Small limits, so generated inputs also run into them (and their documented 413s).
APP = create_app(
    ServeSettings(api_key=None, max_body_bytes=20_000, max_arguments=8, max_chars=2_000, max_upload_bytes=20_000,
                  max_upload_arguments=50),
    fake_served_model(),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Examples per operation; raise it (e.g. SERVE_FUZZ_EXAMPLES=500) for a deeper run by hand.
EXAMPLES = int(os.environ.get("SERVE_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module", autouse=True)
def _stop_app_lifespan():
    """schemathesis starts the app's lifespan (its model thread) itself; stop it after the module."""
    yield
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


def test_schema_covers_every_operation():
    paths = APP.openapi()["paths"]
    assert set(paths) == {"/health", "/v1/model", "/v1/predict", "/v1/explain", "/v1/jobs", "/v1/jobs/{job_id}",
                          "/v1/jobs/{job_id}/results.{fmt}", "/v1/jobs/{job_id}/counts", "/v1/jobs/{job_id}/counts.csv",
                          "/pyvalues/{system}"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                ref = str(response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref"))
                # Every error this app sends has the {"error": ...} shape; none has FastAPI's default.
                assert not ref.endswith("/HTTPValidationError"), (method, path, status)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api(case):
    case.call_and_validate(checks=CHECKS)
