"""The OpenAPI 3.1 document: generated from the API's models, valid, and true of the live app.

schemathesis drives the app in-process (WSGI) with a write token of the owner and checks that
no answer is a 500 and every answer matches the document (status, content type, headers,
body schema). The run is bounded by ``max_examples`` so it stays well under a minute.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from forge_app.rest import OPERATIONS, schemas
from tests.forge_app.conftest import SAMPLE_PROMPTS, World, add_prompts, lock_version
from tests.forge_app.test_rest_api import make_token


def test_the_document_is_served_publicly_and_is_valid_openapi_3_1(app: Flask) -> None:
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # openapi-spec-validator: raises on any problem


def test_the_document_is_generated_from_the_validating_models(app: Flask) -> None:
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    components = document["components"]["schemas"]
    # Every route of the blueprint is documented, and documented by its own models.
    rules = {
        (m, r.rule)
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith("rest.") and r.endpoint != "rest.openapi"
        for m in (r.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    expected = {(m, rule.replace("<", "{").replace(">", "}")) for m, rule in rules}
    assert documented == expected
    # The request body schema is the model's own JSON Schema, field for field.
    own = schemas.PromptCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    assert components["PromptCreate"]["properties"] == own["properties"]
    assert components["PromptCreate"]["additionalProperties"] is False
    submit = document["paths"]["/api/v1/projects/{project_id}/sets/{set_id}/submit"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SubmitRequest"}
    assert components["SubmitRequest"]["properties"]["bump"]["enum"] == ["patch", "minor", "major"]
    assert len(OPERATIONS) == len(documented)
    assert "/api/v1/live/heartbeat" not in document["paths"]  # ACCESS_TOKEN API, DESIGN §7


@pytest.fixture
def api_schema(app: Flask, world: World) -> Any:
    add_prompts(app, world, SAMPLE_PROMPTS)
    lock_version(app, world)
    app.config["FORGE_API_RATE_LIMIT"] = 100_000
    token = make_token(app, world, "owner", "write")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    schema.config.headers = {"Authorization": f"Bearer {token}"}
    return schema


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 10


def _run(operation: Any, headers: dict[str, str], calls: dict[str, int], **strategy: Any) -> None:
    @given(case=operation.as_strategy(**strategy))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)
        calls[operation.label] = calls.get(operation.label, 0) + 1

    run()


def test_the_live_app_conforms_to_its_document(api_schema: Any, world: World) -> None:
    """Every operation with random valid data and with valid data on real objects, and every
    write with invalid bodies; at most MAX_EXAMPLES cases each.

    (schemathesis' pytest plugin does not load under this pytest, so the operations are driven
    through its Python API with hypothesis directly.)
    """
    headers = dict(api_schema.config.headers)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == len(OPERATIONS)
    real = {
        "org_slug": world.org_slug,
        "project_id": str(world.project_id),
        "set_id": str(world.set_id),
        "version": "0.1.0",
        "key": "welcome.message",
        "channel": "production",
    }
    calls: dict[str, int] = {}
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        _run(operation, headers, calls)
        if names:
            _run(operation, headers, calls, path_parameters={n: real[n] for n in names})
        if operation.method.upper() != "GET":  # invalid bodies (reads take no body)
            _run(operation, headers, calls, generation_mode=GenerationMode.NEGATIVE)
    assert set(calls) == {op.label for op in operations}
