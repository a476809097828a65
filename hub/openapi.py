"""OpenAPI 3.1 for every route, built from the handlers' `openapi` declarations and
their pydantic body models (whose JSON Schema is OpenAPI 3.1's dialect)."""

from __future__ import annotations

import re

from pydantic import BaseModel

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}},
}
_SECURITY = {"user": [{"bearer": []}], "admin": [{"bearer": []}], "service": [{"apiKey": []}],
             "service_or_admin": [{"apiKey": []}, {"bearer": []}], None: []}


def _path(pattern: str) -> tuple[str, list[str]]:
    """`/api/v1/orders/(?P<order_id>[^/]+)` → (`/api/v1/orders/{order_id}`, ["order_id"])."""
    names = re.findall(r"\(\?P<(\w+)>[^)]*\)", pattern)
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).rstrip("$"), names


def build_openapi(routes: list[tuple[str, type]]) -> dict:
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {"Error": ERROR_SCHEMA}
    for pattern, handler in routes:
        path, params = _path(pattern)
        for method, spec in handler.openapi.items():
            operation: dict = {
                "summary": spec["summary"],
                "operationId": f"{handler.__name__}_{method}",
                "security": _SECURITY[spec.get("auth")],
                "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params],
                "responses": {
                    str(spec.get("status", 200)): {"description": "Success"},
                    "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }
            body: type[BaseModel] | None = spec.get("body")
            if body is not None:
                schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[body.__name__] = schema
                operation["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{body.__name__}"}}}}
            paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "The hub", "version": "1", "description": "Realtime commerce and notification hub."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
