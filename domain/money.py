"""Money is integer minor units (cents) in storage and arithmetic, a decimal string with
two places on the wire. Never a float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MAX_MINOR = 10**11  # one billion in major units: far above any real price, far below int64


def to_minor(value: object) -> int:
    """A price from JSON (decimal string, integer or number with at most two places)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a decimal string or a number")
    try:
        # str() of a float gives its shortest repr (12.3 → "12.3"), not its binary expansion.
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise ValueError("must be a decimal amount such as 12.50") from None
    if not amount.is_finite():
        raise ValueError("must be a finite amount")
    if amount.as_tuple().exponent < -2 and amount != amount.quantize(Decimal("0.01")):
        raise ValueError("must have at most two decimal places")
    minor = int(amount * 100)
    if minor < 0 or minor >= MAX_MINOR:
        raise ValueError("must be between 0 and 999999999.99")
    return minor


def to_decimal_string(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"
