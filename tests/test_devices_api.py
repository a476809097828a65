"""The devices API (CONTRACT v2 §5) against a running hub: register, list, delete; one
owner per token; a cap per user with the oldest evicted; validated token formats;
other users kept out; and web push's endpoints on a hub that has none."""

from __future__ import annotations

import secrets

import pytest

from domain.devices import MAX_DEVICES_PER_USER
from tests.notify_e2e import customer


DEVICES = "/api/v1/users/me/devices"


def apns_token() -> str:
    return secrets.token_hex(32)


def fcm_token() -> str:
    return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(100)}"


async def register(api, token: str, body: dict):
    return await api.call("POST", DEVICES, body, token=token)


async def listed(api, token: str) -> list[dict]:
    r = await api.call("GET", DEVICES, token=token)
    assert r.status == 200, r
    return r.data["items"]


async def test_register_list_and_delete(api):
    ann = await customer(api)
    r = await register(api, ann.token, {"platform": "apns", "token": apns_token(), "locale": "en-US",
                                        "app_version": "2.4.1"})
    assert r.status == 201, r
    device = r.data
    assert set(device) >= {"id", "platform", "environment", "created_at"}
    assert (device["platform"], device["environment"]) == ("apns", "production")
    assert "token" not in device  # a credential for ringing this phone: never echoed
    r = await register(api, ann.token, {"platform": "fcm", "token": fcm_token(), "environment": "sandbox"})
    assert r.status == 201 and r.data["environment"] == "sandbox", r

    items = await listed(api, ann.token)
    assert [i["platform"] for i in items] == ["apns", "fcm"]
    assert items[0] == {**device, "locale": "en-US", "app_version": "2.4.1"}

    r = await api.call("DELETE", f"{DEVICES}/{device['id']}", token=ann.token)
    assert r.status == 204, r
    assert [i["platform"] for i in await listed(api, ann.token)] == ["fcm"]
    r = await api.call("DELETE", f"{DEVICES}/{device['id']}", token=ann.token)
    assert (r.status, r.error_code) == (404, "device_not_found")


async def test_the_same_token_again_is_the_same_device(api):
    ann = await customer(api)
    token = apns_token()
    first = await register(api, ann.token, {"platform": "apns", "token": token})
    again = await register(api, ann.token, {"platform": "apns", "token": token.upper(), "environment": "sandbox",
                                            "app_version": "3.0"})
    assert (first.status, again.status) == (201, 200)
    assert again.data["id"] == first.data["id"]
    (item,) = await listed(api, ann.token)
    assert (item["id"], item["environment"], item["app_version"]) == (first.data["id"], "sandbox", "3.0")


async def test_a_token_registered_by_another_user_moves_to_the_caller(api):
    ann, bob = await customer(api), await customer(api)
    token = fcm_token()
    r = await register(api, ann.token, {"platform": "fcm", "token": token})
    assert r.status == 201
    r = await register(api, bob.token, {"platform": "fcm", "token": token})
    assert r.status == 201, r  # new to Bob
    assert await listed(api, ann.token) == []
    assert [i["id"] for i in await listed(api, bob.token)] == [r.data["id"]]


async def test_users_never_see_or_delete_each_others_devices(api):
    ann, bob = await customer(api), await customer(api)
    r = await register(api, ann.token, {"platform": "apns", "token": apns_token()})
    assert await listed(api, bob.token) == []
    r2 = await api.call("DELETE", f"{DEVICES}/{r.data['id']}", token=bob.token)
    assert (r2.status, r2.error_code) == (404, "device_not_found")
    assert [i["id"] for i in await listed(api, ann.token)] == [r.data["id"]]
    for method, path in (("GET", DEVICES), ("POST", DEVICES), ("DELETE", f"{DEVICES}/{r.data['id']}")):
        r3 = await api.call(method, path, {"platform": "apns", "token": apns_token()} if method == "POST" else None)
        assert r3.status == 401, (method, r3)


async def test_past_the_cap_the_oldest_device_goes(api):
    ann = await customer(api)
    ids = []
    for _ in range(MAX_DEVICES_PER_USER + 2):
        r = await register(api, ann.token, {"platform": "apns", "token": apns_token()})
        assert r.status == 201, r
        ids.append(r.data["id"])
    assert [i["id"] for i in await listed(api, ann.token)] == ids[2:]


@pytest.mark.parametrize("body, field", [
    ({"platform": "webpush", "token": "a" * 64}, "platform"),
    ({"platform": "apns", "token": "g" * 64}, "token"),  # not hex
    ({"platform": "apns", "token": "ab" * 20}, "token"),  # too short
    ({"platform": "apns", "token": "ab" * 101}, "token"),  # too long
    ({"platform": "fcm", "token": "has spaces and ! marks, not a token"}, "token"),
    ({"platform": "fcm", "token": "x" * 1025}, "token"),
    ({"platform": "fcm", "token": fcm_token() + "\n"}, "token"),  # never stored with a newline
    ({"platform": "fcm", "token": fcm_token(), "environment": "staging"}, "environment"),
    ({"platform": "fcm", "token": fcm_token(), "app_version": "1.0; rm -rf"}, "app_version"),
    ({"platform": "apns"}, "token"),
    ({"token": apns_token()}, "platform"),
])
async def test_invalid_registrations_are_422_and_change_nothing(api, body, field):
    ann = await customer(api)
    r = await register(api, ann.token, body)
    assert (r.status, r.error_code) == (422, "validation_failed"), r
    assert field in str(r.data["error"]["details"])
    assert await listed(api, ann.token) == []


async def test_the_devices_api_is_in_openapi(api):
    r = await api.call("GET", "/api/v1/openapi.json")
    paths = r.data["paths"]
    assert set(paths["/api/v1/users/me/devices"]) == {"get", "post"}
    # 201 for a new device, 200 for the same token again: both are documented.
    assert {"200", "201"} <= set(paths["/api/v1/users/me/devices"]["post"]["responses"])
    assert set(paths["/api/v1/users/me/devices/{device_id}"]) == {"delete"}
    schema = r.data["components"]["schemas"]["DeviceBody"]
    assert set(schema["properties"]) >= {"platform", "token", "environment", "locale", "app_version"}


async def test_without_web_push_its_endpoints_answer_503_and_store_nothing(hub_server, api):
    """A production hub without VAPID keys sends no web push (said at start-up): browsers are
    told so, and no subscription is kept that nothing would ever use."""
    ann = await customer(api)
    hub_server.hub.services.devices.web_push = False  # what such a hub is wired with
    keys = {"p256dh": "B" + "A" * 86, "auth": "A" * 22}
    for method, path, body in (("GET", "/api/v1/push/vapid-public-key", None),
                               ("POST", "/api/v1/users/me/push-subscriptions",
                                {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": keys})):
        r = await api.call(method, path, body, token=ann.token)
        assert (r.status, r.data["error"]["code"]) == (503, "push_unavailable"), (path, r)
    r = await api.call("GET", "/api/v1/users/me/push-subscriptions", token=ann.token)
    assert (r.status, r.data["items"]) == (200, [])
