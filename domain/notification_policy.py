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


def effective_preferences(stored: dict | None) -> dict:
    """Stored preferences over the defaults, section by section (and channel by channel).
    The result shares nested values with `stored` and the defaults: read it, do not change
    it (it runs twice per notification, so it copies no more than it must)."""
    stored = stored or {}
    return {
        "channels": {**DEFAULT_PREFERENCES["channels"], **stored.get("channels", {})},
        "dnd": {**DEFAULT_PREFERENCES["dnd"], **stored.get("dnd", {})},
        "frequency": {**DEFAULT_PREFERENCES["frequency"], **stored.get("frequency", {})},
    }


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


# The order in which the policy decides, per notification (docs/notifications.md):
# 1. routing, per channel: not requested → absent; channel not configured → suppressed
#    `channel_off`; preferences → suppressed `preference`; no address → `no_address`;
# 2. relevance: past `expires_at` → every pending channel suppressed `expired`;
# 3. do not disturb → held `dnd` until the window ends (or until expiry, then suppressed);
# 4. frequency caps (normal and low only) → held `frequency_cap` until it fits;
# 5. otherwise queued and sent.

PENDING, QUEUED, HELD, SENT, DELIVERED, FAILED, SUPPRESSED = (
    "pending", "queued", "held", "sent", "delivered", "failed", "suppressed")
# How far each status has come: a delivery never moves back (provider callbacks arrive
# out of order). Delivered and failed are both final.
RANK = {PENDING: 0, QUEUED: 0, HELD: 0, SENT: 1, DELIVERED: 2, FAILED: 2, SUPPRESSED: 2}


def route(preferences: dict, notification_type: str, category: str, channels, unavailable: dict[str, str]) -> dict:
    """Step 1: channel → (PENDING, None) or (SUPPRESSED, reason). `unavailable` maps a
    channel to why it cannot be used for this user (`channel_off`, `no_address`,
    `address_bounced`)."""
    decisions = {}
    for channel in channels:
        if unavailable.get(channel) == "channel_off":
            decisions[channel] = (SUPPRESSED, "channel_off")
        elif not channel_allows(preferences, channel, notification_type, category):
            decisions[channel] = (SUPPRESSED, "preference")
        elif channel in unavailable:
            decisions[channel] = (SUPPRESSED, unavailable[channel])
        else:
            decisions[channel] = (PENDING, None)
    return decisions


def timing(preferences: dict, user_timezone: str, priority: str, now: datetime,
           expires_at: datetime | None) -> tuple[str, str, datetime | None] | None:
    """Steps 2 and 3: (SUPPRESSED, "expired", None), (HELD, "dnd", release time), or None
    when the message may go now as far as time is concerned. A message that would outlive
    its relevance in the window is released at its expiry, to be suppressed then."""
    if expires_at is not None and now >= expires_at:
        return SUPPRESSED, "expired", None
    end = holds_for_dnd(preferences, user_timezone, priority, now)
    if end is None:
        return None
    return HELD, "dnd", min(end, expires_at) if expires_at is not None else end


HOUR_MS, DAY_MS = 3600_000, 86400_000


def cap_release_at(counted_ms: list[int], now_ms: int, max_per_hour: int, max_per_day: int) -> int | None:
    """Step 4, sliding windows: None if one more message fits now beside the messages
    already counted at `counted_ms` (sorted), else the millisecond at which it will."""
    hour = [t for t in counted_ms if t > now_ms - HOUR_MS]
    day = [t for t in counted_ms if t > now_ms - DAY_MS]
    waits = [now_ms]
    if len(hour) >= max_per_hour:
        waits.append(hour[len(hour) - max_per_hour] + HOUR_MS if max_per_hour else now_ms + HOUR_MS)
    if len(day) >= max_per_day:
        waits.append(day[len(day) - max_per_day] + DAY_MS if max_per_day else now_ms + DAY_MS)
    release = max(waits)
    return None if release == now_ms else release


# A provider's Retry-After is honoured up to this; beyond it the message would mostly be stale.
MAX_RETRY_AFTER_S = 3600


def retry_delay_s(attempt: int, base_s: float, jitter: float, asked_s: float | None = None) -> float:
    """After failed attempt `attempt` (1-based): exponential, ±20 % jitter (`jitter` in
    [0, 1)) so that retries after an outage do not arrive together. With the default base
    of 40 s, five attempts span about ten minutes. Never sooner than the provider asked
    (`asked_s`, its Retry-After), up to MAX_RETRY_AFTER_S."""
    delay = base_s * 2 ** (attempt - 1) * (0.8 + 0.4 * jitter)
    return max(delay, min(asked_s or 0, MAX_RETRY_AFTER_S))


PUSH_URGENCY = {"low": "low", "normal": "normal", "high": "high", "urgent": "high"}
