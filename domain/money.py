"""Money is integer minor units (cents) in storage and arithmetic, a decimal string with
two places on the wire. Never a float."""

from __future__ import annotations

import math
import re
from decimal import Decimal

MAX_MINOR = 10**11  # one billion in major units: far above any real price, far below int64
# What a price may look like as a string: checked before any Decimal is made, so that a
# hostile value (`9e999999`, ten thousand digits) costs nothing. The OpenAPI document
# publishes the same pattern and bounds (PRICE_SCHEMA).
PRICE_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,2})?$"
_PRICE = re.compile(PRICE_PATTERN)
PRICE_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": PRICE_PATTERN, "maxLength": 12},
        {"type": "number", "minimum": 0, "maximum": 999999999.99, "multipleOf": 0.01},
    ],
    "description": "decimal string or number, at most 2 places, 0 to 999999999.99",
}


def to_minor(value: object) -> int:
    """A price from JSON (decimal string, integer or number with at most two places)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a decimal string or a number")
    if isinstance(value, str):
        if len(value) > 12 or not _PRICE.fullmatch(value):
            raise ValueError("must be a decimal amount such as 12.50 (at most 2 places, up to 999999999.99)")
        return int(Decimal(value) * 100)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite amount")
    if not 0 <= value < MAX_MINOR // 100:
        raise ValueError("must be between 0 and 999999999.99")
    cents = value * 100
    # A number from JSON is a binary float: 0.57 arrives as 0.56999…, so a whole number of
    # cents within a rounding error counts as exact (12.345 does not).
    minor = round(cents)
    if abs(cents - minor) > max(1e-6, cents * 1e-14):
        raise ValueError("must have at most two decimal places")
    return minor


def to_decimal_string(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"
