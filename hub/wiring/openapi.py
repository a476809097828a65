"""OpenAPI 3.1 for every route, built from the handlers' `openapi` declarations and
their pydantic body models (whose JSON Schema is OpenAPI 3.1's dialect)."""

from __future__ import annotations

import re

from pydantic import BaseModel

MAX_PATH_PARAMETER = 200  # characters of an id, slug, type or channel in a path

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


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    """A query model's fields as `in: query` parameters (BaseHandler.parse_query reads them)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        # `X | None` fields: in a query string a parameter is left out, never null.
        options = [o for o in field.get("anyOf", [field]) if o.get("type") != "null"]
        field_schema = {k: v for k, v in field.items() if k not in ("anyOf", "title", "default")}
        field_schema.update(options[0] if len(options) == 1 else {"anyOf": options})
        parameters.append({"name": name, "in": "query", "required": name in required, "schema": field_schema})
    return parameters


def _statuses(status: int | tuple[int, ...]) -> tuple[int, ...]:
    return status if isinstance(status, tuple) else (status,)


def build_openapi(routes: list[tuple[str, type]], settings=None) -> dict:
    """The document; `settings` put the configured limits (HUB_MAX_LINE_QUANTITY) in it."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {"Error": ERROR_SCHEMA}
    for pattern, handler in routes:
        path, params = _path(pattern)
        for method, spec in handler.openapi.items():
            operation: dict = {
                "summary": spec["summary"],
                "operationId": f"{handler.__name__}_{method}",
                "security": _SECURITY[spec.get("auth")],
                # BaseHandler.prepare answers 404 for a longer one: no id is that long.
                "parameters": [{"name": p, "in": "path", "required": True,
                                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_PARAMETER}}
                               for p in params]
                + (_query_parameters(spec["query"]) if "query" in spec else []),
                # "status": one success status, or a tuple when it tells something (201 created, 200 already there).
                "responses": {
                    **{str(status): {"description": "Success"} for status in _statuses(spec.get("status", 200))},
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
    for line in ("OrderLine", "ItemBody"):  # an order's lines and the cart's
        if settings is not None and line in schemas:
            schemas[line]["properties"]["quantity"]["maximum"] = settings.max_line_quantity
    if settings is not None and "CloudEventBody" in schemas:  # only the hub speaks as the hub
        schemas["CloudEventBody"]["properties"]["source"]["not"] = {"const": settings.event_source}
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
