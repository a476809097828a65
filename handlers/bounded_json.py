"""JSON from clients, decoded within bounds before anything looks at it.

Python's decoder turns a 10,000-digit literal into an int (or refuses with a ValueError
nobody expects), `1e999` into infinity, and nests until RecursionError; MongoDB stores
neither integers beyond 64 bits nor documents nested past 100 levels. Here numbers are
kept as text until they are known to be in range, `NaN`/`Infinity` (not JSON) are
refused, and nesting and size are capped, so a hostile body costs no more than its bytes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # objects and arrays within each other; the deepest body the API takes has 5
MAX_VALUES = 100_000  # members and elements in one document
_INT64 = 2**63
_EXACT_FLOAT = 2**53
_MAX_NUMBER_TEXT = 64  # characters of one number literal (a float has 17 significant digits)


class MalformedJson(Exception):
    """Not JSON, or nested too deeply, or too many values: 400 `malformed_json`."""


MAX_NAMED_FIELDS = 20  # the paths are the client's own keys: an answer repeats a bounded few
MAX_FIELD_CHARS = 100


class NumbersOutOfRange(Exception):
    """Numbers that no field accepts (beyond 64 bits, or not finite): 422 naming each (the
    first MAX_NAMED_FIELDS, each path cut to MAX_FIELD_CHARS)."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = [field[:MAX_FIELD_CHARS] for field in fields[:MAX_NAMED_FIELDS]]
        super().__init__(", ".join(self.fields))


class _OutOfRange:
    """Stands for a number literal too large to decode; found by its path afterwards."""


_OUT_OF_RANGE = _OutOfRange()


def _int(text: str):
    if len(text) > 20:  # int64 has at most 19 digits and a sign
        return _OUT_OF_RANGE
    value = int(text)
    return value if -_INT64 <= value < _INT64 else _OUT_OF_RANGE


def _float(text: str):
    if len(text) > _MAX_NUMBER_TEXT:
        return _OUT_OF_RANGE
    value = float(text)
    if not math.isfinite(value):
        return _OUT_OF_RANGE
    if value == 0 and any(digit in "123456789" for digit in text.lower().partition("e")[0]):
        return _OUT_OF_RANGE  # underflowed to zero: 1e-999999 is not 0
    # JSON has one kind of number: 5.0 is the integer 5 (JSON Schema's "integer" says so too),
    # exactly so up to 2**53.
    if value.is_integer() and abs(value) <= _EXACT_FLOAT:
        return int(value)
    return value


def _constant(text: str):
    raise MalformedJson(f"{text} is not a JSON value")


def loads(raw: bytes | str) -> Any:
    """The decoded document; MalformedJson or NumbersOutOfRange when it is refused."""
    try:
        data = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise MalformedJson(f"nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedJson(str(exc)) from None
    if _check_shape(data):
        raise NumbersOutOfRange(_paths_of_out_of_range(data))
    # `\ud800` alone decodes to a string that is not Unicode text: nothing can store or
    # send it. Looked for only when the body has such an escape at all.
    if _SURROGATE_ESCAPE.search(raw if isinstance(raw, bytes) else raw.encode(errors="surrogatepass")):
        _check_text(data)
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_text(data: Any) -> None:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise MalformedJson("a \\u escape is half a surrogate pair") from None


def _check_shape(data: Any) -> bool:
    """Refuses too deep or too large documents; says whether a number was out of range."""
    if data is _OUT_OF_RANGE:
        return True
    out_of_range = False
    values = 0
    stack = [(data, 1)] if isinstance(data, (dict, list)) else []
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MalformedJson(f"nested deeper than {MAX_DEPTH} levels")
        items = container.values() if isinstance(container, dict) else container
        values += len(items)
        if values > MAX_VALUES:
            raise MalformedJson(f"more than {MAX_VALUES} values")
        for item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
            elif item is _OUT_OF_RANGE:
                out_of_range = True
    return out_of_range


def _paths_of_out_of_range(data: Any) -> list[str]:
    """Dotted paths (`items.0.quantity`, as validation errors name fields) of the numbers
    out of range."""
    found: list[str] = []
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if value is _OUT_OF_RANGE:
            found.append(".".join(map(str, path)))
        elif isinstance(value, dict):
            stack.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
    return sorted(found)
