"""The one compact JSON encoding (no spaces, text as is rather than \\u escapes): what goes
out in WebSocket frames and provider payloads, where every byte counts against a limit."""

from __future__ import annotations

import json


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode(value) -> bytes:
    return dumps(value).encode()
