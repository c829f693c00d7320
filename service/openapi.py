"""OpenAPI additions for bodies the routes parse themselves (JSON or multipart)."""

import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.problems import PROBLEM_RESPONSE

# FastAPI documents a default 422 (`HTTPValidationError`, application/json) on every route with
# parameters; k2e answers every validation error as a problem (service/problems.py) instead.
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


def add_request_schemas(app: FastAPI, models: dict[str, type[BaseModel]]) -> None:
    """Put each model's JSON schema under components/schemas, where `$ref`s find it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _, defs = models_json_schema(
            [(model, "validation") for model in models.values()],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        _document_validation_problems(schema)
        _headers_are_never_null(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_validation_problems(schema: dict[str, Any]) -> None:
    """Say what a 422 really is: `application/problem+json`, like every other error."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            documented = responses.get("422", {}).get("content", {}).get("application/json", {})
            if documented.get("schema", {}).get("$ref") == _FASTAPI_422:
                responses["422"] = PROBLEM_RESPONSE
    # Their schemas describe a body k2e never sends; drop them once nothing refers to them.
    components = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_ONLY:
        if f'"#/components/schemas/{name}"' not in json.dumps(schema):
            components.pop(name, None)


def _headers_are_never_null(schema: dict[str, Any]) -> None:
    """An optional header is absent or has a value: never JSON `null`. FastAPI documents
    `int | None` as `anyOf: [integer, null]`, which tells clients `Last-Event-ID: null`
    would do."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                options = parameter.get("schema", {}).get("anyOf")
                if parameter.get("in") != "header" or not options:
                    continue
                kept = [option for option in options if option.get("type") != "null"]
                if len(kept) == 1:
                    rest = {k: v for k, v in parameter["schema"].items() if k != "anyOf"}
                    parameter["schema"] = {**kept[0], **rest}


def request_body(
    files: list[str],
    fields: dict[str, str] | None = None,
    required: list[str] | None = None,
    json_ref: str | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` for a body a route parses itself: multipart with these ``files``
    (binary) and text ``fields`` (name -> description), and a JSON alternative."""
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in (fields or {}).items()
    }
    properties.update({name: {"type": "string", "format": "binary"} for name in files})
    content: dict[str, Any] = {}
    if json_ref is not None:
        content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{json_ref}"}}
    content["multipart/form-data"] = {
        "schema": {"type": "object", "properties": properties, "required": required or files}
    }
    return {"requestBody": {"required": True, "content": content}}
