"""Request bodies shared by several handlers, as pydantic models. The same models
produce /api/v1/openapi.json."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from domain.money import PRICE_PATTERN, PRICE_SCHEMA, to_minor

from domain.users import PASSWORD_MAX, PASSWORD_MIN, check_locale, check_timezone, normalize_email, normalize_phone


class Body(BaseModel):
    # Unknown fields are ignored, not refused, so clients may send more than we read. The
    # OpenAPI document lists only the fields read (additionalProperties: false), so that
    # what a generated client sends is exactly what the server takes.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False, json_schema_extra={"additionalProperties": False})


# The published patterns describe what the validators (domain/users.py) accept, so that a
# value the document allows is never refused; the validators also forgive surrounding
# spaces, case and phone separators, which the document does not mention.
EMAIL_SCHEMA_PATTERN = (r"^[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*@"
                        r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
Email = Annotated[str, Field(max_length=254, json_schema_extra={"pattern": EMAIL_SCHEMA_PATTERN}),
                  AfterValidator(normalize_email)]
Password = Annotated[str, Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Phone = Annotated[str, Field(max_length=32, json_schema_extra={"pattern": r"^\+[1-9][0-9]{6,14}$"}),
                  AfterValidator(normalize_phone)]
Timezone = Annotated[str, Field(max_length=64, json_schema_extra={"enum": sorted(available_timezones())}),
                     AfterValidator(check_timezone)]
Locale = Annotated[str, Field(max_length=35, json_schema_extra={"pattern": r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"}),
                   AfterValidator(check_locale)]
Price = Annotated[int, BeforeValidator(to_minor), WithJsonSchema(PRICE_SCHEMA)]
# Free-form JSON a client attaches (notification data, event data). The decoder already
# bounds it (handlers/bounded_json.py); the document shows those bounds for two levels.
_SCALAR = [{"type": "string"}, {"type": "boolean"}, {"type": "null"},
           {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
           {"type": "number", "minimum": -1e300, "maximum": 1e300}]
JSON_OBJECT_SCHEMA = {"type": "object", "additionalProperties": {"anyOf": _SCALAR + [
    {"type": "array", "items": {"anyOf": _SCALAR}},
    {"type": "object", "additionalProperties": {"anyOf": _SCALAR}}]}}
JsonObject = Annotated[dict, WithJsonSchema(JSON_OBJECT_SCHEMA)]
# In a query string every value is text: only the decimal string form.
QueryPrice = Annotated[int, BeforeValidator(to_minor), WithJsonSchema(
    {"type": "string", "pattern": PRICE_PATTERN, "maxLength": 12, "description": PRICE_SCHEMA["description"]})]
