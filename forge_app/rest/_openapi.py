"""The OpenAPI 3.1 document, generated from the registered operations and their pydantic models.

    >>> document = build_openapi()          # doctest: +SKIP
    >>> document["openapi"]
    '3.1.0'

Pydantic writes JSON Schema 2020-12, which is exactly the schema dialect of OpenAPI 3.1, so the
models' schemas go into ``components.schemas`` unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from forge_app.rest._registry import CODES, OPERATIONS, Operation
from forge_app.rest._schemas import ErrorResponse

__all__ = ["build_openapi"]

_PARAMETERS: dict[str, dict[str, Any]] = {
    "org_slug": {"type": "string", "description": "The organisation's short name."},
    "project_id": {"type": "string", "format": "uuid"},
    "set_id": {"type": "string", "format": "uuid"},
    "version": {"type": "string", "description": "A semantic version, like 1.2.0."},
    "key": {"type": "string", "description": "A prompt id, like welcome.message."},
    "channel": {"type": "string", "description": "A channel name, like production."},
}
_RULE_ARG = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_REF = "#/components/schemas/{model}"


def build_openapi() -> dict[str, Any]:
    """The whole document (a new dict each call)."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (ErrorResponse, "serialization")
    ]
    for op in OPERATIONS:
        models.append((op.response, "serialization"))
        if op.body is not None:
            models.append((op.body, "validation"))
    keys, top = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})

    def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        return dict(keys[(model, mode)])

    error = {"application/json": {"schema": ref(ErrorResponse, "serialization")}}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        path = "/api/v1" + _RULE_ARG.sub(r"{\1}", op.rule)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op, ref, error)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Anvil FORGE API",
            "version": "1",
            "description": (
                "Read organisations, projects, prompt sets, versions, prompts and channels; "
                "edit LIVE drafts, move sets through review, publish and roll back. "
                "Authenticate with a personal API token: 'Authorization: Bearer forge_pat_…'. "
                "A read token changes nothing; a token never does more than its user's roles."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(op: Operation, ref: Any, error: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _PARAMETERS[name]}
        for name in _RULE_ARG.findall(op.rule)
    ]
    if op.paginated:
        parameters += [
            {
                "name": "page",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 10**9, "default": 1},
            },
            {
                "name": "per_page",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
            },
        ]
    success: dict[str, Any] = {
        "description": "OK" if op.status == 200 else "Created",
        "content": {"application/json": {"schema": ref(op.response, "serialization")}},
    }
    if op.paginated:
        success["headers"] = {
            "Link": {
                "description": 'rel="next" when there is a next page',
                "schema": {"type": "string"},
            }
        }
    responses: dict[str, Any] = {str(op.status): success}
    if op.method == "GET":
        parameters.append(
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
            }
        )
        success.setdefault("headers", {})["ETag"] = {"schema": {"type": "string"}}
        responses["304"] = {"description": "Not modified (the ETag given in If-None-Match)."}
    statuses = {400, 401, 403, 404, 429, *op.extra_errors}
    if op.write:
        statuses.add(409)
    for status in sorted(statuses):
        responses[str(status)] = {"description": CODES[status].replace("_", " "), "content": error}
    document: dict[str, Any] = {
        "operationId": op.endpoint,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": responses,
    }
    if op.description:
        document["description"] = op.description
    if op.body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(op.body, "validation")}},
        }
    return document
