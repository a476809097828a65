"""Native push end to end: a hub configured with the APNs fake (HTTP/2 + TLS), the FCM fake
(OAuth + messages:send over TLS) and the Web Push service; the test CA is trusted through
HUB_EXTRA_CA_FILE, and the provider base URLs, the operator's own, need no allow-list
(hub/adapters/outgoing.py). A notification's push
delivery lists each target with its own outcome; dead tokens are pruned; a failing
device is retried alone."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.apns_fake import ApnsFake
from tests.fcm_fake import FcmFake
from tests.local_tls import LocalCA
from tests.notify_e2e import hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.notify_e2e import (customer, deliveries, eventually, inbox_item, metric_value, placed, quietly,
                              request_notification)

pytestmark = pytest.mark.timeout(90)

KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "com.example.shop"
DEVICES = "/api/v1/users/me/devices"


@pytest.fixture(scope="module")
def ca():
    ca = LocalCA()
    yield ca
    ca.close()


@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def apns(ca, signing_key):
    fake = ApnsFake(ca, signing_key.public_key(), key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fcm(ca):
    fake = FcmFake(ca)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def extra_env(tmp_path, ca, signing_key, apns, fcm):
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    account_file = tmp_path / "service-account.json"
    account_file.write_text(json.dumps(fcm.service_account()))
    return {
        "APNS_KEY_FILE": str(key_file), "APNS_KEY_ID": KEY_ID, "APNS_TEAM_ID": TEAM_ID, "APNS_TOPIC": TOPIC,
        "APNS_BASE_URL": apns.base_url, "APNS_SANDBOX_BASE_URL": apns.base_url,
        "FCM_SERVICE_ACCOUNT_FILE": str(account_file), "FCM_BASE_URL": fcm.base_url,
        "HUB_EXTRA_CA_FILE": ca.ca_file,  # the base URLs are the operator's: no allow-list needed
    }


async def add_device(api, token: str, platform: str, device_token: str) -> str:
    r = await api.call("POST", DEVICES, {"platform": platform, "token": device_token}, token=token)
    assert r.status == 201, r
    return r.data["id"]


async def device_ids(api, token: str) -> list[str]:
    r = await api.call("GET", DEVICES, token=token)
    return [d["id"] for d in r.data["items"]]


def targets(item: dict) -> dict[str, dict]:
    return {t["id"]: t for t in deliveries(item)["push"]["targets"]}


async def push_note(api, user_id: str, title: str = "A note", **extra):
    r = await request_notification(api, {"user_id": user_id, "type": "order_note", "title": title,
                                         "body": "About your order", "channels": ["push"], **extra})
    assert r.status == 202, r
    return r.data["id"]


async def test_an_order_status_change_reaches_iphone_android_and_browser_at_once(api, apns, fcm, push):
    ann = await customer(api)
    iphone_token, android_token = apns.device_token(), fcm.registration_token()
    iphone = await add_device(api, ann.token, "apns", iphone_token)
    android = await add_device(api, ann.token, "fcm", android_token)
    r = await api.call("POST", "/api/v1/users/me/push-subscriptions", push.new_subscription(), token=ann.token)
    assert r.status == 201, r
    admin = await api.admin_token()
    product = await api.product(admin)
    order = await placed(api, ann.token, product["id"])
    r = await api.call("POST", f"/api/v1/orders/{order['id']}/transitions", {"status": "confirmed"}, token=admin)
    assert r.status == 200, r

    item = await inbox_item(api, ann.token, type="order_confirmed", settled=("sent", "suppressed"), timeout=20)
    push_delivery = deliveries(item)["push"]
    assert push_delivery["status"] == "sent", push_delivery
    by_kind = {t["kind"]: t for t in push_delivery["targets"]}
    assert set(by_kind) == {"apns", "fcm", "webpush"}
    assert by_kind["apns"]["id"] == iphone and by_kind["fcm"]["id"] == android
    assert all((t["status"], t["reason"], t["attempts"]) == ("sent", None, 1) for t in by_kind.values())

    (got,) = [r for r in apns.received if r["payload"]["notification_id"] == item["id"]]
    assert got["token"] == iphone_token
    assert got["payload"]["type"] == "order_confirmed"
    assert got["headers"]["apns-collapse-id"] == f"order-{order['id']}"
    assert got["headers"]["apns-priority"] == "5"
    assert got["payload"]["aps"]["alert"]["title"] and isinstance(got["payload"]["aps"]["badge"], int)
    assert got["payload"]["aps"]["badge"] >= 1
    (msg,) = [r["message"] for r in fcm.received if r["message"]["data"]["notification_id"] == item["id"]]
    assert msg["token"] == android_token and msg["data"]["type"] == "order_confirmed"
    assert any(p["payload"]["id"] == item["id"] for p in push.received)


async def test_a_dead_token_is_pruned_and_never_tried_again(api, apns, fcm):
    ann = await customer(api)
    dead_iphone, dead_android, good = apns.device_token(), fcm.registration_token(), apns.device_token()
    apns.answer(dead_iphone, 410, "Unregistered")
    fcm.answer(dead_android, 404, "UNREGISTERED")
    dead_ids = [await add_device(api, ann.token, "apns", dead_iphone),
                await add_device(api, ann.token, "fcm", dead_android)]
    good_id = await add_device(api, ann.token, "apns", good)
    before = await metric_value(api, "hub_push_targets_total", provider="apns", status="failed", reason="unregistered")

    nid = await push_note(api, ann.id)
    item = await inbox_item(api, ann.token, nid, settled=("sent", "failed"), timeout=20)
    assert deliveries(item)["push"]["status"] == "sent"
    found = targets(item)
    assert (found[dead_ids[0]]["status"], found[dead_ids[0]]["reason"]) == ("failed", "unregistered")
    assert (found[dead_ids[1]]["status"], found[dead_ids[1]]["reason"]) == ("failed", "unregistered")
    assert found[good_id]["status"] == "sent"
    assert await device_ids(api, ann.token) == [good_id]
    assert await metric_value(api, "hub_push_targets_total", provider="apns", status="failed",
                              reason="unregistered") == before + 1

    nid = await push_note(api, ann.id, title="Again")
    item = await inbox_item(api, ann.token, nid, settled=("sent", "failed"), timeout=20)
    assert list(targets(item)) == [good_id]
    assert len(apns.received_for(good)) == 2
    assert [a for a in apns.answered if a[0] == dead_iphone] == [(dead_iphone, 410, "Unregistered")]
    assert [a for a in fcm.answered if a[0] == dead_android] == [(dead_android, 404, "UNREGISTERED")]


async def test_a_failing_device_is_retried_alone_after_its_retry_after(api, apns, fcm):
    ann = await customer(api)
    iphone_token, android_token = apns.device_token(), fcm.registration_token()
    apns.answer(iphone_token, 429, "TooManyRequests", retry_after="1", times=1)
    iphone = await add_device(api, ann.token, "apns", iphone_token)
    android = await add_device(api, ann.token, "fcm", android_token)

    nid = await push_note(api, ann.id, priority="high")

    async def waiting():
        item = await inbox_item(api, ann.token, nid)
        found = targets(item) if "targets" in deliveries(item)["push"] else {}
        assert found and found[android]["status"] == "sent" and found[iphone]["status"] == "queued", found
        return item
    item = await eventually(waiting, 20, what="android sent while the iphone waits")
    assert deliveries(item)["push"]["status"] == "queued"
    assert targets(item)[iphone]["reason"] == "apns_429" and targets(item)[iphone]["until"]

    item = await inbox_item(api, ann.token, nid, settled=("sent", "failed"), timeout=20)
    found = targets(item)
    assert (found[iphone]["status"], found[iphone]["attempts"]) == ("sent", 2)
    assert (found[android]["status"], found[android]["attempts"]) == ("sent", 1)
    assert len(fcm.received_for(android_token)) == 1  # never sent twice to the one that took it
    assert [a[1] for a in apns.answered if a[0] == iphone_token] == [429, 200]
    first, second = [t for a, t in zip(apns.answered, apns.answered_at) if a[0] == iphone_token]
    assert second - first >= 0.9  # its Retry-After, not the 0.2 s retry base
    assert apns.received_for(iphone_token)[0]["headers"]["apns-priority"] == "10"


async def test_a_notification_read_before_the_retry_is_not_pushed(api, apns):
    ann = await customer(api)
    token = apns.device_token()
    apns.answer(token, 503, "ServiceUnavailable", retry_after="2", times=1)
    device = await add_device(api, ann.token, "apns", token)
    nid = await push_note(api, ann.id)
    await eventually(lambda: apns.answered, 10, what="first APNs answer")
    r = await api.call("POST", f"/api/v1/users/me/notifications/{nid}/read", token=ann.token)
    assert r.status == 200
    item = await inbox_item(api, ann.token, nid, settled=("suppressed", "sent", "failed"), timeout=20)
    assert (deliveries(item)["push"]["status"], deliveries(item)["push"]["reason"]) == ("suppressed", "seen")
    assert (targets(item)[device]["status"], targets(item)[device]["reason"]) == ("suppressed", "seen")
    await quietly(0.5, lambda: apns.received == [])


async def test_push_preferences_apply_to_devices(api, apns, fcm):
    ann = await customer(api)
    await add_device(api, ann.token, "apns", apns.device_token())
    await add_device(api, ann.token, "fcm", fcm.registration_token())
    r = await api.call("PUT", "/api/v1/users/me/preferences",
                       {"channels": {"push": {"enabled": False, "types": []}}}, token=ann.token)
    assert r.status == 200, r
    nid = await push_note(api, ann.id)
    item = await inbox_item(api, ann.token, nid, settled=("suppressed",))
    assert deliveries(item)["push"]["reason"] == "preference"
    await quietly(0.3, lambda: apns.received == [] and fcm.received == [])


async def test_a_user_with_only_a_phone_is_reachable_by_push(api, apns):
    ann = await customer(api)
    started = time.monotonic()
    nid = await push_note(api, ann.id)
    item = await inbox_item(api, ann.token, nid, settled=("suppressed",))
    assert deliveries(item)["push"]["reason"] == "no_address"  # nothing registered yet
    token = apns.device_token()
    await add_device(api, ann.token, "apns", token)
    nid = await push_note(api, ann.id, title="Now")
    item = await inbox_item(api, ann.token, nid, settled=("sent",))
    await apns.wait_for(1, token=token)
    assert time.monotonic() - started < 30
