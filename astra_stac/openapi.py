"""The OpenAPI document: every operation states its error responses (in the one
error shape) and, outside the public paths, that it needs a Bearer key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "description"],
    "properties": {
        "code": {"type": "string", "examples": ["SCENE_NOT_FOUND"]},
        "description": {"type": "string"},
    },
}
_ERRORS_EVERY_ROUTE = {
    "400": "Invalid input (INVALID_PARAMETER, INVALID_ID_FORMAT, …).",
    "404": "Not found (NOT_FOUND, SCENE_NOT_FOUND).",
    "405": "Method not allowed.",
    "413": "Request body too large.",
    "415": "Unsupported media type.",
    "500": "Unexpected server error (INTERNAL_ERROR); never a stack trace.",
    "503": "The database is unavailable (SERVICE_UNAVAILABLE).",
}
_ERRORS_PROTECTED = {
    "401": "Missing, unknown or revoked API key (UNAUTHORIZED).",
    "403": "The key's scope is too small, or a signature is invalid (FORBIDDEN).",
    "429": "Rate limited (TOO_MANY_REQUESTS); see Retry-After.",
}
# Routes that read a scene's band files (the tiler's, under /scenes/{scene_id}/).
_SCENE_FILE_ROUTE = "/scenes/{scene_id}/"
_ERRORS_SCENE_FILES = {
    "422": "A band file is somewhere the server does not read (ASSET_NOT_ALLOWED).",
    "502": "A band file could not be read (ASSET_UNAVAILABLE).",
}
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def document_errors_and_auth(schema: dict[str, Any], is_public: Callable[[str], bool]) -> None:
    """Add the error responses and the Bearer requirement to every operation."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An astra-stac API key: astra_sk_live_…",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            errors = dict(_ERRORS_EVERY_ROUTE)
            if not is_public(path):
                operation["security"] = [{"bearerAuth": []}]
                errors.update(_ERRORS_PROTECTED)
            if _SCENE_FILE_ROUTE in path:
                errors.update(_ERRORS_SCENE_FILES)
            # FastAPI documents 422 for validation; this API answers 400 instead
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
            for status, description in errors.items():
                response = responses.setdefault(status, _error(description))
                response.setdefault("content", _error(description)["content"])


def install(app: FastAPI, is_public: Callable[[str], bool]) -> None:
    """Post-process the app's generated OpenAPI document once, when first asked."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            document_errors_and_auth(schema, is_public)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
