"""GET/PUT /api/v1/users/me/preferences over HTTP."""

from __future__ import annotations

import pytest

from domain.notification_policy import DEFAULT_PREFERENCES

PREFS = "/api/v1/users/me/preferences"


@pytest.mark.stores
async def test_defaults_then_replace_then_read_back(api):
    user = await api.register()
    token = user["access_token"]
    r = await api.call("GET", PREFS, token=token)
    assert r.status == 200 and r.data == DEFAULT_PREFERENCES
    body = {"channels": {"sms": {"enabled": True, "types": ["payment", "order.shipped"]},
                         "email": {"enabled": False, "types": []}},
            "dnd": {"enabled": True, "start": "23:00", "end": "07:30", "timezone": "Europe/Paris", "urgent_bypass": False},
            "frequency": {"max_per_hour": 3, "max_per_day": 20}}
    r = await api.call("PUT", PREFS, body, token=token)
    assert r.status == 200, r
    expected = {**DEFAULT_PREFERENCES, **body,
                "channels": {**DEFAULT_PREFERENCES["channels"], **body["channels"]}}
    assert r.data == expected
    assert (await api.call("GET", PREFS, token=token)).data == expected
    # Another user still has the defaults.
    other = await api.register()
    assert (await api.call("GET", PREFS, token=other["access_token"])).data == DEFAULT_PREFERENCES


@pytest.mark.parametrize("body, field", [
    ({"dnd": {"enabled": True, "start": "25:00"}}, "dnd.start"),
    ({"dnd": {"enabled": "yes"}}, "dnd.enabled"),
    ({"dnd": {"enabled": True, "timezone": "Mars/Base"}}, "dnd.timezone"),
    ({"frequency": {"max_per_hour": -1}}, "frequency.max_per_hour"),
    ({"frequency": {"max_per_day": "50"}}, "frequency.max_per_day"),
    ({"channels": {"push": {"enabled": True, "types": ["Not A Type"]}}}, "channels.push.types.0"),
    ({"channels": {"push": {"types": ["all"]}}}, "channels.push.enabled"),
])
async def test_invalid_preferences_are_422_and_change_nothing(api, body, field):
    token = (await api.register())["access_token"]
    r = await api.call("PUT", PREFS, body, token=token)
    assert r.status == 422 and field in {d["field"] for d in r.data["error"]["details"]}, r
    assert (await api.call("GET", PREFS, token=token)).data == DEFAULT_PREFERENCES


async def test_parts_left_out_keep_their_defaults(api):
    token = (await api.register())["access_token"]
    r = await api.call("PUT", PREFS, {"channels": {"sms": {"enabled": True}}, "dnd": {"enabled": True}}, token=token)
    assert r.status == 200, r
    assert r.data["channels"]["sms"] == {"enabled": True, "types": ["all"]}
    assert r.data["channels"]["email"] == DEFAULT_PREFERENCES["channels"]["email"]
    assert r.data["dnd"] == {**DEFAULT_PREFERENCES["dnd"], "enabled": True}
    assert r.data["frequency"] == DEFAULT_PREFERENCES["frequency"]


async def test_preferences_need_a_signed_in_user(api):
    assert (await api.call("GET", PREFS)).status == 401
    assert (await api.call("PUT", PREFS, {})).status == 401
