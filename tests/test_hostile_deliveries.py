"""Addresses that must never cost us a send: a malformed e-mail address stored before the
rules tightened (refused once, recorded, never retried), SMS only to allowed countries
(HUB_SMS_ALLOWED_COUNTRIES) and at most HUB_SMS_MAX_PER_DAY per user whatever the
preferences say (issue 12, docs/security.md "Accounts and sessions").

A hub in-process over real HTTP, with the SMTP and Twilio stand-ins (tests/peers.py)."""

from __future__ import annotations

import pytest

from domain.delivery import Message, PermanentError
from channels.email import EmailChannel
from config.settings import SettingsError, load_settings
from tests.notify_e2e import extra_env, hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.notify_e2e import customer, deliveries, eventually, inbox_item, quietly, request_notification


COUNTRIES = {"HUB_SMS_ALLOWED_COUNTRIES": "1,44", "HUB_SMS_MAX_PER_DAY": "3"}


async def notify(api, user_id: str, channels: list[str], priority: str = "normal") -> str:
    r = await request_notification(api, {"user_id": user_id, "type": "order_ready", "title": "Ready",
                                         "body": "Your parcel is waiting", "channels": channels, "priority": priority})
    assert r.status == 202, r
    return r.data["id"]


# E-mail --------------------------------------------------------------------------------------
@pytest.mark.parametrize("stored", ["ünï@example.com", "a,b@example.com", '"q"@example.com'])
async def test_a_malformed_stored_address_is_refused_once_and_never_retried(api, hub_server, sink, stored):
    bad = await customer(api)
    await hub_server.hub.db["users"].update_one({"_id": bad.id}, {"$set": {"email": stored}})  # an old record
    good = await customer(api)
    nid = await notify(api, bad.id, ["email", "websocket"])
    item = await inbox_item(api, bad.token, nid, settled=("suppressed", "failed", "sent", "delivered"))
    email = deliveries(item)["email"]
    assert email["status"] == "suppressed" and email["reason"] == "invalid_address", email
    assert deliveries(item)["websocket"]["status"] in ("sent", "delivered")  # the other channels carry on
    # Mail to a good address goes out right behind it; the bad one never reached the server.
    await notify(api, good.id, ["email"])
    [mail] = await sink.wait_for(1)
    assert mail.rcpt_tos == [good.email]
    await quietly(0.5, lambda: len(sink.messages) == 1)


async def test_the_email_channel_refuses_a_non_ascii_address_as_permanent(sink):
    channel = EmailChannel(sink.url, "Shop <shop@example.com>", 2)
    try:
        with pytest.raises(PermanentError) as refused:
            await channel.send(Message(notification_id="n1", user_id="u1", address="ünï@example.com",
                                       content={"subject": "Hi", "text": "Hello"}))
        assert refused.value.reason == "invalid_address"
        assert sink.messages == []
    finally:
        await channel.close()


# SMS countries -------------------------------------------------------------------------------
@pytest.mark.parametrize("extra_env", [COUNTRIES])
async def test_a_phone_outside_the_allowed_countries_is_refused(api, hub_server, extra_env):
    ann = await customer(api)
    for phone in ("+33 6 12 34 56 78", "+882 1234 5678", "+49 30 1234567"):
        r = await api.call("PATCH", "/api/v1/users/me", {"phone": phone, "name": "Ann"}, token=ann.token)
        assert r.status == 422 and r.error_code == "validation_failed", r
        assert [d["field"] for d in r.data["error"]["details"]] == ["phone"]
    me = await api.call("GET", "/api/v1/users/me", token=ann.token)
    assert me.data["phone"] is None and me.data["name"] is None  # nothing of the refused PATCH applied
    for phone in ("+1 555 010 0101", "+44 20 7946 0018"):
        r = await api.call("PATCH", "/api/v1/users/me", {"phone": phone}, token=ann.token)
        assert r.status == 200, r

    refused = await api.call("POST", "/api/v1/auth/register",
                             {"email": "far@example.com", "password": "correct-horse", "phone": "+33612345678"})
    assert refused.status == 422 and [d["field"] for d in refused.data["error"]["details"]] == ["phone"]
    assert await hub_server.hub.db["users"].count_documents({"email": "far@example.com"}) == 0


@pytest.mark.parametrize("extra_env", [COUNTRIES])
async def test_a_stored_phone_outside_the_allowed_countries_is_never_sent_to(api, hub_server, twilio, extra_env):
    ann = await sms_customer(api, "+1 555 010 0101")
    await hub_server.hub.db["users"].update_one({"_id": ann.id}, {"$set": {"phone": "+33612345678"}})
    nid = await notify(api, ann.id, ["sms"], priority="urgent")
    item = await inbox_item(api, ann.token, nid, settled=("suppressed", "failed", "sent"))
    assert deliveries(item)["sms"]["status"] == "suppressed"
    assert deliveries(item)["sms"]["reason"] == "sms_country_not_allowed"
    await quietly(0.3, lambda: twilio.messages == [])


# SMS per day ---------------------------------------------------------------------------------
async def sms_customer(api, phone: str = "+1 555 010 0101"):
    ann = await customer(api)
    r = await api.call("PATCH", "/api/v1/users/me", {"phone": phone}, token=ann.token)
    assert r.status == 200, r
    # Preferences as generous as they go: they cannot lift the hub's own ceiling.
    r = await api.call("PUT", "/api/v1/users/me/preferences", {
        "channels": {"sms": {"enabled": True, "types": ["all"]}},
        "frequency": {"max_per_hour": 10_000, "max_per_day": 100_000}}, token=ann.token)
    assert r.status == 200, r
    return ann


@pytest.mark.parametrize("extra_env", [COUNTRIES])
async def test_sms_per_user_per_day_stop_at_the_ceiling_whatever_the_preferences(api, hub_server, twilio, extra_env):
    ann = await sms_customer(api)
    other = await sms_customer(api, "+44 20 7946 0018")
    sent = [await notify(api, ann.id, ["sms"], priority=p) for p in ("normal", "urgent", "high")]
    await eventually(lambda: len(twilio.messages) == 3, 10, what="three SMS")
    over = await notify(api, ann.id, ["sms", "websocket"], priority="urgent")
    item = await inbox_item(api, ann.token, over, settled=("suppressed", "sent", "delivered"))
    assert deliveries(item)["sms"] == {**deliveries(item)["sms"], "status": "suppressed", "reason": "sms_daily_limit"}
    assert deliveries(item)["websocket"]["status"] in ("sent", "delivered")
    # Another user is not held back by the first one's count.
    await notify(api, other.id, ["sms"])
    await eventually(lambda: len(twilio.messages) == 4, 10, what="the other user's SMS")
    assert [m["To"] for m in twilio.messages].count("+15550100101") == 3
    for nid in sent:
        assert deliveries(await inbox_item(api, ann.token, nid))["sms"]["status"] == "sent"


@pytest.mark.parametrize("extra_env", [{"HUB_SMS_MAX_PER_DAY": "0"}])
async def test_a_ceiling_of_zero_sends_no_sms(api, hub_server, twilio, extra_env):
    ann = await sms_customer(api)
    nid = await notify(api, ann.id, ["sms"], priority="urgent")
    item = await inbox_item(api, ann.token, nid, settled=("suppressed", "sent"))
    assert deliveries(item)["sms"]["reason"] == "sms_daily_limit"
    assert twilio.messages == []


# Settings ------------------------------------------------------------------------------------
def test_sms_settings_defaults_and_parsing():
    settings = load_settings({})
    assert settings.sms_country_codes == () and settings.sms_max_per_day == 20
    assert load_settings({"HUB_SMS_ALLOWED_COUNTRIES": " +1, 44 ,353"}).sms_country_codes == ("1", "44", "353")
    for bad in ("abc", "0", "1,,x", "1234", "44;1"):
        with pytest.raises(SettingsError) as info:
            load_settings({"HUB_SMS_ALLOWED_COUNTRIES": bad})
        assert str(info.value).startswith("HUB_SMS_ALLOWED_COUNTRIES:")
    for bad in ("-1", "10001", "many"):
        with pytest.raises(SettingsError) as info:
            load_settings({"HUB_SMS_MAX_PER_DAY": bad})
        assert str(info.value).startswith("HUB_SMS_MAX_PER_DAY:")
