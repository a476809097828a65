"""Request bodies shared by several handlers, as pydantic models. The same models
produce /api/v1/openapi.json."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from domain.money import to_minor

from domain.users import PASSWORD_MAX, PASSWORD_MIN, check_locale, check_timezone, normalize_email, normalize_phone


class Body(BaseModel):
    # Unknown fields are ignored, not refused, so clients may send more than we read.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


Email = Annotated[str, Field(max_length=254), AfterValidator(normalize_email)]
Password = Annotated[str, Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Phone = Annotated[str, Field(max_length=32), AfterValidator(normalize_phone)]
Timezone = Annotated[str, Field(max_length=64), AfterValidator(check_timezone)]
Locale = Annotated[str, Field(max_length=35), AfterValidator(check_locale)]
Price = Annotated[int, BeforeValidator(to_minor), Field(description="decimal string or number, 2 places")]
