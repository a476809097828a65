"""Notification policy: which channels a user allows for a notification, and whether it
must wait for the end of the user's do-not-disturb window. Pure functions (no I/O), so
every rule is tested by table.

Preferences follow CONTRACT §2 "Notifications"; a user without stored preferences gets
DEFAULT_PREFERENCES.
"""

from __future__ import annotations

import copy
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

CHANNELS = ("email", "sms", "push", "websocket")
CATEGORIES = ("order", "payment", "points", "stock", "marketing")
PRIORITIES = ("low", "normal", "high", "urgent")

DEFAULT_PREFERENCES = {
    "channels": {
        "email": {"enabled": True, "types": ["all"]},
        "sms": {"enabled": False, "types": []},
        "push": {"enabled": True, "types": ["all"]},
        "websocket": {"enabled": True, "types": ["all"]},
    },
    "dnd": {"enabled": False, "start": "22:00", "end": "08:00", "timezone": None, "urgent_bypass": True},
    "frequency": {"max_per_hour": 10, "max_per_day": 50},
}


def default_preferences() -> dict:
    return copy.deepcopy(DEFAULT_PREFERENCES)


def channel_allows(preferences: dict, channel: str, notification_type: str, category: str) -> bool:
    """The channel is on and lists the type, its category, or `all`."""
    setting = preferences["channels"].get(channel) or {}
    types = setting.get("types") or []
    return bool(setting.get("enabled")) and ("all" in types or notification_type in types or category in types)


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def dnd_ends_at(preferences: dict, user_timezone: str, now: datetime) -> datetime | None:
    """When the do-not-disturb window that `now` falls in ends (aware datetime), or None
    if `now` is outside it. Times are wall-clock times in the DND time zone (else the
    user's); the start is inclusive, the end exclusive; a window may cross midnight; a
    window whose start equals its end is empty. Daylight-saving changes are honoured: the
    end is 08:00 local on the day it falls, whatever the UTC offset that day."""
    dnd = preferences["dnd"]
    if not dnd.get("enabled"):
        return None
    zone = ZoneInfo(dnd.get("timezone") or user_timezone)
    local = now.astimezone(zone)
    start, end = _clock(dnd["start"]), _clock(dnd["end"])
    if start == end:
        return None
    wall = local.time().replace(tzinfo=None)
    if start < end:
        inside, end_day = start <= wall < end, local.date()
    elif wall >= start:  # crosses midnight, before it
        inside, end_day = True, local.date() + timedelta(days=1)
    else:  # crosses midnight, after it
        inside, end_day = wall < end, local.date()
    if not inside:
        return None
    # An end time skipped by a spring-forward change is read with the offset before the
    # change (an 02:30 end, clocks jumping 02:00 → 03:00, ends at 03:30): late, never early.
    return datetime.combine(end_day, end, tzinfo=zone)


def holds_for_dnd(preferences: dict, user_timezone: str, priority: str, now: datetime) -> datetime | None:
    """When a message of `priority` may go out if DND holds it now, else None.
    Urgent messages go through when `urgent_bypass` is set."""
    if priority == "urgent" and preferences["dnd"].get("urgent_bypass", True):
        return None
    return dnd_ends_at(preferences, user_timezone, now)


def counts_against_caps(priority: str) -> bool:
    """High and urgent messages are neither held by nor counted in the frequency caps."""
    return priority not in ("high", "urgent")
