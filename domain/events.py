"""The CloudEvents 1.0 envelope of every Kafka message (CONTRACT §3)."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from typing import Any

TOPIC_OF_PREFIX = {
    "order": "orders",
    "payment": "payments",
    "points": "points",
    "inventory": "inventory",
    "notification": "notifications",
    "cart": "orders",  # cart.abandoned
    "coupon": "orders",  # coupon.redeemed, coupon.released
}
_REQUIRED = ("specversion", "id", "source", "type")
MAX_ATTRIBUTE_LENGTH = 256  # id, source, type, subject: ids and names, never prose
MAX_DATA_DEPTH = 16  # objects and lists within each other in `data`
MAX_DATA_VALUES = 10_000
MAX_DATA_INTEGER = 2**53  # what every JSON reader keeps exactly (and within MongoDB's 64 bits)


class InvalidEvent(ValueError):
    """A message that is not a usable CloudEvent; the reason goes to the dead-letter topic."""


class Rejected(Exception):
    """A valid event that cannot take effect (unknown order, impossible move); the reason
    goes to the dead-letter topic."""


def topic_for(event_type: str) -> str:
    return TOPIC_OF_PREFIX[event_type.split(".", 1)[0]]


def event_time(at: datetime) -> str:
    """RFC 3339 in UTC, as CloudEvents' `time`."""
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def cloud_event(event_type: str, source: str, data: dict, *, subject: str | None = None,
                event_id: str | None = None, time: datetime | str | None = None) -> dict:
    event = {
        "specversion": "1.0",
        "id": event_id or uuid.uuid4().hex,
        "source": source,
        "type": event_type,
        "time": time if isinstance(time, str) else event_time(time or datetime.now(timezone.utc)),
        "datacontenttype": "application/json",
        "data": data,
    }
    if subject is not None:
        event["subject"] = subject
    return event


def check_cloud_event(event: Any) -> dict:
    """The event itself if it is a structured CloudEvent 1.0 with a JSON object as data."""
    if not isinstance(event, dict):
        raise InvalidEvent("not a JSON object")
    for name in _REQUIRED:
        if not isinstance(event.get(name), str) or not event[name]:
            raise InvalidEvent(f"missing or empty attribute '{name}'")
    if event["specversion"] != "1.0":
        raise InvalidEvent(f"unsupported specversion {event['specversion']!r}")
    if not isinstance(event.get("data"), dict):
        raise InvalidEvent("'data' must be a JSON object")
    if "subject" in event and not isinstance(event["subject"], str):
        raise InvalidEvent("'subject' must be a string")
    for name in (*_REQUIRED, "subject"):
        if len(event.get(name) or "") > MAX_ATTRIBUTE_LENGTH:
            raise InvalidEvent(f"attribute '{name}' is longer than {MAX_ATTRIBUTE_LENGTH} characters")
    check_data_bounds(event["data"])
    return event


def check_data_bounds(data: dict) -> None:
    """Every event's data, before anything reads it: nesting, size and numbers bounded the
    way the HTTP API bounds a body (each handler then bounds its own fields further)."""
    stack, seen = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_DATA_VALUES:
            raise InvalidEvent(f"'data' holds more than {MAX_DATA_VALUES} values")
        if isinstance(value, (dict, list)):
            if depth > MAX_DATA_DEPTH:
                raise InvalidEvent(f"'data' nests deeper than {MAX_DATA_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            if abs(value) > MAX_DATA_INTEGER:
                raise InvalidEvent(f"a number in 'data' is beyond ±{MAX_DATA_INTEGER}")
        elif isinstance(value, float):
            if not math.isfinite(value) or abs(value) > MAX_DATA_INTEGER:
                raise InvalidEvent("a number in 'data' is not finite or beyond range")
