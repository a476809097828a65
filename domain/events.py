"""The CloudEvents 1.0 envelope of every Kafka message (CONTRACT §3)."""

from __future__ import annotations

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
    return event
