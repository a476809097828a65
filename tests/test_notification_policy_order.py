"""The policy's steps in order (domain/notification_policy): routing, relevance and do not
disturb, frequency caps (sliding windows), and the retry backoff. Pure functions, by table;
tests/test_notification_policy.py covers channel_allows, dnd_ends_at and holds_for_dnd."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from domain.notification_policy import (CHANNELS, DAY_MS, HELD, HOUR_MS, PENDING, SUPPRESSED, cap_release_at,
                                        default_preferences, effective_preferences, retry_delay_s, route, timing)

PARIS = ZoneInfo("Europe/Paris")
NIGHT = datetime(2026, 6, 10, 23, 0, tzinfo=PARIS)          # inside 22:00-08:00
DAY = datetime(2026, 6, 10, 15, 0, tzinfo=PARIS)            # outside
MORNING = datetime(2026, 6, 11, 8, 0, tzinfo=PARIS)         # the window's end


def prefs(dnd=None, **channels):
    p = default_preferences()
    p["channels"].update(channels)
    if dnd is not None:
        p["dnd"].update({"enabled": True, **dnd})
    return p


# Routing ---------------------------------------------------------------------------------

def test_route_with_defaults_and_every_address():
    assert route(default_preferences(), "order_shipped", "order", CHANNELS, {}) == {
        "email": (PENDING, None), "sms": (SUPPRESSED, "preference"),
        "push": (PENDING, None), "websocket": (PENDING, None)}


def test_route_only_the_channels_asked_for():
    assert route(default_preferences(), "promo", "marketing", ("email",), {}) == {"email": (PENDING, None)}


@pytest.mark.parametrize("channel_pref, unavailable, decision", [
    # channel not configured comes first, whatever the preferences or the address
    ({"enabled": True, "types": ["all"]}, {"sms": "channel_off"}, (SUPPRESSED, "channel_off")),
    ({"enabled": False, "types": []}, {"sms": "channel_off"}, (SUPPRESSED, "channel_off")),
    # then the preferences, before the address
    ({"enabled": False, "types": ["all"]}, {"sms": "no_address"}, (SUPPRESSED, "preference")),
    ({"enabled": True, "types": ["payment"]}, {"sms": "no_address"}, (SUPPRESSED, "preference")),
    # then the address
    ({"enabled": True, "types": ["all"]}, {"sms": "no_address"}, (SUPPRESSED, "no_address")),
    ({"enabled": True, "types": ["order"]}, {"sms": "no_address"}, (SUPPRESSED, "no_address")),
    ({"enabled": True, "types": ["order_shipped"]}, {}, (PENDING, None)),
    ({"enabled": True, "types": ["order"]}, {"email": "no_address"}, (PENDING, None)),  # another channel's
])
def test_route_order(channel_pref, unavailable, decision):
    p = prefs(sms=channel_pref)
    assert route(p, "order_shipped", "order", ("sms",), unavailable) == {"sms": decision}


def test_route_by_type_category_or_all():
    p = prefs(email={"enabled": True, "types": ["payment_failed"]}, push={"enabled": True, "types": ["points"]},
              websocket={"enabled": True, "types": []})
    got = route(p, "payment_failed", "payment", ("email", "push", "websocket"), {})
    assert got == {"email": (PENDING, None), "push": (SUPPRESSED, "preference"), "websocket": (SUPPRESSED, "preference")}
    got = route(p, "points_awarded", "points", ("email", "push"), {})
    assert got == {"email": (SUPPRESSED, "preference"), "push": (PENDING, None)}


def test_stored_preferences_merge_channel_by_channel():
    p = effective_preferences({"channels": {"sms": {"enabled": True, "types": ["all"]}},
                               "dnd": {"enabled": True}, "frequency": {"max_per_hour": 2}})
    assert p["channels"]["email"] == {"enabled": True, "types": ["all"]}  # untouched
    assert p["channels"]["sms"] == {"enabled": True, "types": ["all"]}
    assert p["dnd"]["enabled"] is True and p["dnd"]["end"] == "08:00"
    assert p["frequency"] == {"max_per_hour": 2, "max_per_day": 50}
    assert effective_preferences(None) == default_preferences()


# Relevance and do not disturb --------------------------------------------------------------

@pytest.mark.parametrize("dnd, priority, now, expires_at, expected", [
    # nothing in the way
    (None, "normal", NIGHT, None, None),
    ({}, "normal", DAY, None, None),
    (None, "normal", NIGHT, NIGHT + timedelta(minutes=1), None),
    # expired: at or after expires_at, whatever else
    (None, "normal", NIGHT, NIGHT, (SUPPRESSED, "expired", None)),
    ({}, "urgent", NIGHT, NIGHT - timedelta(seconds=1), (SUPPRESSED, "expired", None)),
    ({}, "normal", DAY, DAY - timedelta(hours=1), (SUPPRESSED, "expired", None)),
    # held until the window's end
    ({}, "normal", NIGHT, None, (HELD, "dnd", MORNING)),
    ({}, "low", NIGHT, None, (HELD, "dnd", MORNING)),
    ({}, "high", NIGHT, None, (HELD, "dnd", MORNING)),
    ({}, "normal", NIGHT, MORNING + timedelta(hours=1), (HELD, "dnd", MORNING)),
    # ... or until it expires, when that comes first (to be suppressed then)
    ({}, "normal", NIGHT, NIGHT + timedelta(hours=1), (HELD, "dnd", NIGHT + timedelta(hours=1))),
    ({}, "normal", NIGHT, MORNING, (HELD, "dnd", MORNING)),
    # urgent goes through when bypass is set, is held when not
    ({}, "urgent", NIGHT, None, None),
    ({"urgent_bypass": False}, "urgent", NIGHT, None, (HELD, "dnd", MORNING)),
    ({"urgent_bypass": False}, "urgent", NIGHT, NIGHT + timedelta(minutes=5),
     (HELD, "dnd", NIGHT + timedelta(minutes=5))),
])
def test_timing(dnd, priority, now, expires_at, expected):
    assert timing(prefs(dnd), "Europe/Paris", priority, now, expires_at) == expected


def test_timing_release_is_the_window_end_in_the_users_time_zone():
    now = datetime(2026, 6, 10, 23, 30, tzinfo=timezone.utc)  # 19:30 in New York, 01:30 in Paris
    assert timing(prefs({}), "America/New_York", "normal", now, None) is None
    kind, reason, until = timing(prefs({}), "Europe/Paris", "normal", now, None)
    assert (kind, reason) == (HELD, "dnd")
    assert until == datetime(2026, 6, 11, 6, 0, tzinfo=timezone.utc)  # 08:00 CEST


# Frequency caps ----------------------------------------------------------------------------

T = 1_800_000_000_000  # a millisecond timestamp


@pytest.mark.parametrize("counted, now, per_hour, per_day, release", [
    ([], T, 10, 50, None),
    ([T - 1000], T, 1, 50, T - 1000 + HOUR_MS),
    # two in the last hour with a cap of two: the third waits for the oldest to age out
    ([T - 20 * 60_000, T - 10 * 60_000], T, 2, 50, T - 20 * 60_000 + HOUR_MS),
    # exactly one hour later the oldest is out of the window (start exclusive)
    ([T - HOUR_MS, T - 10 * 60_000], T, 2, 50, None),
    ([T - HOUR_MS + 1, T - 10 * 60_000], T, 2, 50, T + 1),
    # with three counted and a cap of two, it is the second oldest that must age out
    ([T - 50 * 60_000, T - 40 * 60_000, T - 30 * 60_000], T, 2, 50, T - 40 * 60_000 + HOUR_MS),
    # below the cap: fits
    ([T - 30 * 60_000], T, 2, 50, None),
    # the day window
    ([T - 23 * HOUR_MS, T - 5 * HOUR_MS], T, 10, 2, T - 23 * HOUR_MS + DAY_MS),
    ([T - DAY_MS, T - 5 * HOUR_MS], T, 10, 2, None),
    ([T - 23 * HOUR_MS, T - 20 * HOUR_MS, T - 5 * HOUR_MS], T, 10, 2, T - 20 * HOUR_MS + DAY_MS),
    ([T - DAY_MS + 1, T - 5 * HOUR_MS], T, 10, 2, T + 1),
    # both windows full: the later release wins
    ([T - 23 * HOUR_MS, T - 30 * 60_000], T, 1, 2, T - 23 * HOUR_MS + DAY_MS),
    ([T - 23 * HOUR_MS, T - 30 * 60_000, T - 10 * 60_000], T, 1, 3, T - 23 * HOUR_MS + DAY_MS),
    ([T - 23 * HOUR_MS, T - 30 * 60_000, T - 10 * 60_000], T, 1, 10, T - 10 * 60_000 + HOUR_MS),
    # a cap of zero: nothing fits for a whole window
    ([], T, 0, 50, T + HOUR_MS),
    ([], T, 10, 0, T + DAY_MS),
    ([T - 1], T, 0, 0, T + DAY_MS),
])
def test_cap_release_at(counted, now, per_hour, per_day, release):
    assert cap_release_at(counted, now, per_hour, per_day) == release


def test_a_message_released_by_the_caps_then_fits():
    counted = [T - 20 * 60_000, T - 10 * 60_000]
    release = cap_release_at(counted, T, 2, 50)
    assert cap_release_at(counted, release, 2, 50) is None
    assert cap_release_at(counted, release - 1, 2, 50) == release


# Retries -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attempt, low, high", [(1, 32, 48), (2, 64, 96), (3, 128, 192), (4, 256, 384)])
def test_retry_delay_doubles_within_twenty_percent(attempt, low, high):
    assert retry_delay_s(attempt, 40, 0.0) == pytest.approx(low)
    assert retry_delay_s(attempt, 40, 0.5) == pytest.approx((low + high) / 2)
    assert low <= retry_delay_s(attempt, 40, 0.999999) < high


def test_five_attempts_with_base_40_span_about_ten_minutes():
    # Five attempts: four waits, after attempts 1 to 4.
    fastest = sum(retry_delay_s(a, 40, 0.0) for a in range(1, 5))
    slowest = sum(retry_delay_s(a, 40, 0.999999) for a in range(1, 5))
    middle = sum(retry_delay_s(a, 40, 0.5) for a in range(1, 5))
    assert fastest == pytest.approx(8 * 60)
    assert slowest == pytest.approx(12 * 60, rel=1e-5)
    assert middle == pytest.approx(10 * 60)


def test_retry_delay_is_never_sooner_than_the_provider_asked_up_to_an_hour():
    assert retry_delay_s(1, 40, 0.5, asked_s=300) == pytest.approx(300)
    assert retry_delay_s(1, 40, 0.5, asked_s=5) == pytest.approx(40)  # our backoff is longer
    assert retry_delay_s(1, 40, 0.5, asked_s=86_400) == pytest.approx(3600)
    assert retry_delay_s(1, 40, 0.5, asked_s=None) == pytest.approx(40)


def test_retry_delay_scales_with_the_base():
    assert retry_delay_s(3, 1.0, 0.5) == pytest.approx(4.0)
    assert retry_delay_s(1, 0.01, 0.5) == pytest.approx(0.01)
