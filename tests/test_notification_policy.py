"""The notification policy's pure rules, by table (CONTRACT §2 "Notifications")."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from domain.notification_policy import (channel_allows, counts_against_caps, default_preferences, dnd_ends_at,
                                        holds_for_dnd)

PARIS = ZoneInfo("Europe/Paris")


def prefs(**dnd):
    p = default_preferences()
    p["dnd"].update({"enabled": True, **dnd})
    return p


@pytest.mark.parametrize("channel, types, enabled, ntype, category, allowed", [
    ("email", ["all"], True, "order.shipped", "order", True),
    ("email", ["all"], False, "order.shipped", "order", False),
    ("push", ["order"], True, "order.shipped", "order", True),
    ("push", ["order"], True, "payment.failed", "payment", False),
    ("push", ["payment.failed"], True, "payment.failed", "payment", True),
    ("sms", [], True, "order.shipped", "order", False),
    ("websocket", ["marketing", "points"], True, "points.awarded", "points", True),
])
def test_channel_allows(channel, types, enabled, ntype, category, allowed):
    p = default_preferences()
    p["channels"][channel] = {"enabled": enabled, "types": types}
    assert channel_allows(p, channel, ntype, category) is allowed


def test_defaults_follow_the_contract():
    p = default_preferences()
    assert [c for c in ("email", "sms", "push", "websocket") if channel_allows(p, c, "order.shipped", "order")] == \
        ["email", "push", "websocket"]
    assert p["dnd"] == {"enabled": False, "start": "22:00", "end": "08:00", "timezone": None, "urgent_bypass": True}
    assert p["frequency"] == {"max_per_hour": 10, "max_per_day": 50}
    p["channels"]["email"]["types"].append("x")
    assert default_preferences()["channels"]["email"]["types"] == ["all"]  # a fresh copy each time


@pytest.mark.parametrize("start, end, local, ends", [
    ("22:00", "08:00", "2026-06-10 21:59", None),
    ("22:00", "08:00", "2026-06-10 22:00", "2026-06-11 08:00"),  # start inclusive
    ("22:00", "08:00", "2026-06-11 03:00", "2026-06-11 08:00"),  # after midnight
    ("22:00", "08:00", "2026-06-11 07:59", "2026-06-11 08:00"),
    ("22:00", "08:00", "2026-06-11 08:00", None),                # end exclusive
    ("13:00", "14:00", "2026-06-10 13:30", "2026-06-10 14:00"),  # same-day window
    ("13:00", "14:00", "2026-06-10 14:00", None),
    ("09:00", "09:00", "2026-06-10 09:00", None),                # empty window
])
def test_dnd_window(start, end, local, ends):
    now = datetime.fromisoformat(local).replace(tzinfo=PARIS)
    got = dnd_ends_at(prefs(start=start, end=end), "Europe/Paris", now)
    assert got == (None if ends is None else datetime.fromisoformat(ends).replace(tzinfo=PARIS))


@pytest.mark.parametrize("utc_now, expected_utc_end", [
    # Night of 28→29 March 2026: Paris goes from UTC+1 to UTC+2 at 02:00 local.
    ("2026-03-28T22:30:00", "2026-03-29T06:00:00"),  # 23:30 CET → ends 08:00 CEST = 06:00 UTC
    # Night of 24→25 October 2026: back from UTC+2 to UTC+1.
    ("2026-10-24T21:30:00", "2026-10-25T07:00:00"),  # 23:30 CEST → ends 08:00 CET = 07:00 UTC
])
def test_dnd_end_follows_daylight_saving(utc_now, expected_utc_end):
    now = datetime.fromisoformat(utc_now).replace(tzinfo=timezone.utc)
    ends = dnd_ends_at(prefs(), "Europe/Paris", now)
    assert ends.astimezone(timezone.utc) == datetime.fromisoformat(expected_utc_end).replace(tzinfo=timezone.utc)


def test_dnd_timezone_overrides_the_users_and_disabled_means_never():
    now = datetime(2026, 6, 10, 21, 0, tzinfo=timezone.utc)  # 23:00 Paris, 17:00 New York
    assert dnd_ends_at(prefs(), "Europe/Paris", now) is not None
    assert dnd_ends_at(prefs(timezone="America/New_York"), "Europe/Paris", now) is None
    assert dnd_ends_at(prefs(enabled=False), "Europe/Paris", now) is None


@pytest.mark.parametrize("priority, bypass, held", [
    ("low", True, True), ("normal", True, True), ("high", True, True),
    ("urgent", True, False), ("urgent", False, True),
])
def test_urgent_bypasses_dnd_only_when_allowed(priority, bypass, held):
    now = datetime(2026, 6, 10, 21, 0, tzinfo=timezone.utc)  # 23:00 Paris: inside 22:00-08:00
    assert (holds_for_dnd(prefs(urgent_bypass=bypass), "Europe/Paris", priority, now) is not None) is held


@pytest.mark.parametrize("priority, counted", [("low", True), ("normal", True), ("high", False), ("urgent", False)])
def test_high_and_urgent_are_not_capped(priority, counted):
    assert counts_against_caps(priority) is counted
