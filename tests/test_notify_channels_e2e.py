"""Notifications end to end over every channel (CONTRACT §2 "Notifications", §4).

A hub started in-process, real HTTP and WebSocket clients, and the providers' stand-ins
over their real protocols: an SMTP server (tests/peers.SmtpSink), a Twilio Messages API
(tests/peers.TwilioFake) and a decrypting Web Push service with VAPID checks
(tests/push_service.PushService). Also what providers' failures do: retries with their
attempt counts, permanent failures with their reason, dead push subscriptions forgotten.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from twilio.request_validator import RequestValidator

from tests.notify_e2e import extra_env, hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.notify_e2e import (PUBLIC_URL, TWILIO_FROM, TWILIO_TOKEN, WsClient, customer, deliveries, eventually,
                              inbox_item, metric_value, placed, quietly, request_notification)



async def subscribe_push(api, push, token) -> dict:
    subscription = push.new_subscription()
    r = await api.call("POST", "/api/v1/users/me/push-subscriptions", subscription, token=token)
    assert r.status == 201, r
    return subscription


async def push_endpoints(api, token) -> list[str]:
    r = await api.call("GET", "/api/v1/users/me/push-subscriptions", token=token)
    assert r.status == 200, r
    return [s["endpoint"] for s in r.data["items"]]


# An order, on every channel ---------------------------------------------------------------

async def test_order_created_reaches_email_push_websocket_and_inbox(api, hub_server, sink, push):
    admin = await api.admin_token()
    product = await api.product(admin, price="12.50")
    ann = await customer(api, name="Ann")
    subscription = await subscribe_push(api, push, ann.token)
    ws = await WsClient.connect(hub_server.port, ann.token)
    try:
        await ws.send({"op": "subscribe", "channel": "user"})
        subscribed = await ws.wait_for(lambda f: f.get("type") == "subscribed")
        assert subscribed["channel"] == "user"

        order = await placed(api, ann.token, product["id"], quantity=2)

        # Email: to the customer, subject naming the order, text and HTML alternatives.
        [mail] = await sink.wait_for(1, timeout=15)
        assert mail.rcpt_tos == [ann.email]
        assert mail["To"] == ann.email
        assert order["number"] in mail["Subject"]
        assert mail.get_content_type() == "multipart/alternative"
        text, html = mail.iter_parts()
        assert text.get_content_type() == "text/plain" and order["number"] in text.get_content()
        assert html.get_content_type() == "text/html" and order["number"] in html.get_content()
        assert "<html" in html.get_content()

        # Web push: VAPID-signed, encrypted for this subscription, decrypted by the service.
        [received] = await push.wait_for(1, timeout=15)
        assert received["subscription"] == subscription["endpoint"].rsplit("/", 1)[1]
        payload = received["payload"]
        assert order["number"] in payload["title"] and payload["body"]
        assert payload["data"]["order_id"] == order["id"]
        headers = received["headers"]
        assert int(headers["TTL"]) > 0
        assert headers["Urgency"] == "normal"
        assert headers["Topic"] and len(headers["Topic"]) <= 32  # one topic per order
        assert headers["Content-Encoding"] == "aes128gcm"

        # WebSocket: a live notification frame on the user channel.
        frame = await ws.wait_for(lambda f: f.get("type") == "notification")
        assert frame["channel"] == "user"
        # The user channel carries the order's events too: every frame after `subscribed`
        # has the next seq, the notification among them.
        assert [f["seq"] for f in ws.frames if "seq" in f and f["type"] != "subscribed"][:frame["seq"] - subscribed["seq"]] \
            == list(range(subscribed["seq"] + 1, frame["seq"] + 1))
        note = frame["notification"]
        assert set(note) >= {"id", "type", "title", "body", "data", "priority", "created_at"}
        assert note["id"] == payload["id"]
        assert note["type"] == "order_created" and note["priority"] == "normal"
        assert order["number"] in note["title"]
        assert note["data"]["order_id"] == order["id"]
    finally:
        ws.close()

    # The inbox: the same notification with one delivery per channel.
    item = await inbox_item(api, ann.token, note["id"], settled=("sent", "delivered", "suppressed"))
    assert item["type"] == "order_created" and item["read_at"] is None
    assert item["title"] == note["title"] and item["body"] == note["body"]
    assert set(item) >= {"id", "type", "title", "body", "data", "priority", "created_at", "read_at", "deliveries"}
    by_channel = deliveries(item)
    for channel in ("email", "push", "websocket"):
        assert by_channel[channel]["status"] == "sent", by_channel
        assert by_channel[channel]["attempts"] == 1
        assert by_channel[channel]["at"]
    assert by_channel["sms"]["status"] == "suppressed"
    assert by_channel["sms"]["reason"] == "preference"


# SMS and Twilio's status callbacks --------------------------------------------------------

async def sms_customer(api):
    ann = await customer(api)
    r = await api.call("PATCH", "/api/v1/users/me", {"phone": "+1 555 010 0101"}, token=ann.token)
    assert r.status == 200 and r.data["phone"] == "+15550100101", r
    r = await api.call("PUT", "/api/v1/users/me/preferences",
                       {"channels": {"sms": {"enabled": True, "types": ["all"]}}}, token=ann.token)
    assert r.status == 200, r
    return ann


async def twilio_callback(api, callback_url: str, params: dict, *, token: str = TWILIO_TOKEN):
    """POST a status callback to the hub as Twilio would: signed over the URL it calls."""
    signature = RequestValidator(token).compute_signature(callback_url, params)
    parts = urlsplit(callback_url)
    body = "&".join(f"{k}={v}" for k, v in params.items()).encode()
    return await api.call("POST", f"{parts.path}?{parts.query}", body=body, headers={
        "X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


async def test_sms_is_sent_then_moved_forward_by_signed_status_callbacks_only(api, sink, twilio):
    ann = await sms_customer(api)
    long_body = "Your parcel is waiting at the pick-up point. " * 10  # far over one SMS
    r = await request_notification(api, {"user_id": ann.id, "type": "order_ready", "title": "Ready for pick-up",
                                         "body": long_body, "channels": ["sms"]})
    assert r.status == 202, r
    nid = r.data["id"]

    await eventually(lambda: twilio.messages, 10, what="an SMS at Twilio")
    [form] = twilio.messages
    assert form["To"] == "+15550100101"
    assert form["From"] == TWILIO_FROM
    assert form["Body"].startswith("Ready for pick-up") and len(form["Body"]) <= 160
    callback = form["StatusCallback"]
    assert callback == f"{PUBLIC_URL}/api/v1/webhooks/twilio?n={nid}"
    sid = twilio.requests[0].response["sid"]

    item = await inbox_item(api, ann.token, nid, settled=("sent",))
    assert deliveries(item)["sms"]["provider_id"] == sid
    assert set(deliveries(item)) == {"sms"}  # channels: ["sms"] only

    # A forged signature: 403, nothing changes.
    forged = await twilio_callback(api, callback, {"MessageSid": sid, "MessageStatus": "delivered"},
                                   token="not-the-token")
    assert forged.status == 403 and forged.error_code == "invalid_signature", forged
    unsigned = await api.call("POST", urlsplit(callback).path + "?n=" + nid,
                              body=f"MessageSid={sid}&MessageStatus=delivered".encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status == 403, unsigned
    assert deliveries(await inbox_item(api, ann.token, nid))["sms"]["status"] == "sent"

    # Delivered, signed over the public URL the hub gave Twilio.
    ok = await twilio_callback(api, callback, {"MessageSid": sid, "MessageStatus": "delivered"})
    assert ok.status == 204, ok
    assert deliveries(await inbox_item(api, ann.token, nid))["sms"]["status"] == "delivered"

    # A late `sent` callback (they arrive out of order) does not move it back.
    late = await twilio_callback(api, callback, {"MessageSid": sid, "MessageStatus": "sent"})
    assert late.status == 204, late
    late = await twilio_callback(api, callback, {"MessageSid": sid, "MessageStatus": "failed", "ErrorCode": "30003"})
    assert late.status == 204, late
    sms = deliveries(await inbox_item(api, ann.token, nid))["sms"]
    assert sms["status"] == "delivered" and sms["reason"] is None
    assert len(sink.messages) == 0


async def test_twilio_500_is_retried_then_sent(api, twilio):
    ann = await sms_customer(api)
    twilio.fail_next(500)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_ready", "title": "Ready",
                                         "body": "Come and get it", "channels": ["sms"]})
    assert r.status == 202, r
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"), timeout=15)
    sms = deliveries(item)["sms"]
    assert sms["status"] == "sent" and sms["attempts"] == 2, sms
    assert [req.status for req in twilio.requests] == [500, 201]
    assert len(twilio.messages) == 1


async def test_twilio_400_fails_at_once(api, twilio):
    ann = await sms_customer(api)
    twilio.fail_next(400)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_ready", "title": "Ready",
                                         "body": "Come and get it", "channels": ["sms"]})
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"), timeout=15)
    sms = deliveries(item)["sms"]
    assert sms["status"] == "failed" and sms["attempts"] == 1 and sms["reason"] == "sms_rejected", sms
    await quietly(1.5, lambda: len(twilio.requests) == 1)


# Email failures -----------------------------------------------------------------------------

async def test_smtp_451_twice_is_retried_and_delivered_on_the_third_attempt(api, sink):
    ann = await customer(api)
    sink.fail_next(451, count=2)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "A note",
                                         "body": "About your order", "channels": ["email"]})
    assert r.status == 202, r
    await sink.wait_for(1, timeout=20)
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"))
    email = deliveries(item)["email"]
    assert email["status"] == "sent" and email["attempts"] == 3, email
    assert len(sink.messages) == 1


async def test_smtp_550_fails_at_once_with_its_reason(api, sink):
    ann = await customer(api)
    sink.fail_next(550)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "A note",
                                         "body": "About your order", "channels": ["email", "websocket"]})
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"), timeout=15)
    email = deliveries(item)["email"]
    assert email["status"] == "failed" and email["attempts"] == 1, email
    assert email["reason"] == "recipient_rejected"
    assert deliveries(item)["websocket"]["status"] == "sent"  # one channel's failure is its own
    await quietly(1.5, lambda: not sink.messages)


async def test_a_hard_bounce_stops_email_to_that_address_and_the_user_can_see_it(api, sink):
    ann = await customer(api)
    sink.fail_next(550, text="5.1.1 No such user")
    body = {"user_id": ann.id, "type": "order_note", "title": "A note", "body": "About your order",
            "channels": ["email", "websocket"]}
    r = await request_notification(api, body)
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"), timeout=15)
    assert deliveries(item)["email"]["reason"] == "recipient_rejected"
    me = (await api.call("GET", "/api/v1/users/me", token=ann.token)).data
    assert me["email_bounced_at"] is not None, me

    r = await request_notification(api, dict(body, title="Another note"))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "suppressed"), timeout=15)
    assert deliveries(item)["email"]["status"] == "suppressed"
    assert deliveries(item)["email"]["reason"] == "address_bounced"
    assert deliveries(item)["websocket"]["status"] == "sent"
    await quietly(1.0, lambda: not sink.messages)


async def test_smtp_stall_is_a_timeout_and_retried(api, sink):
    ann = await customer(api)
    sink.stall_next(3.0)  # HUB_PROVIDER_TIMEOUT_S is 1
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "A note",
                                         "body": "About your order", "channels": ["email"]})
    await sink.wait_for(1, timeout=20)
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"))
    email = deliveries(item)["email"]
    assert email["status"] == "sent" and email["attempts"] == 2, email


async def test_retries_stop_after_max_attempts(api, sink):
    ann = await customer(api)
    sink.fail_next(451, count=20)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "A note",
                                         "body": "About your order", "channels": ["email"]})
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"), timeout=30)
    email = deliveries(item)["email"]
    assert email["status"] == "failed" and email["attempts"] == 5 and email["reason"] == "smtp_4xx", email
    assert not sink.messages


# Push failures ------------------------------------------------------------------------------

async def test_push_410_forgets_the_subscription(api, push):
    ann = await customer(api)
    subscription = await subscribe_push(api, push, ann.token)
    assert await push_endpoints(api, ann.token) == [subscription["endpoint"]]
    push.gone(subscription, 410)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "A note",
                                         "body": "About your order", "channels": ["push"]})
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"), timeout=15)
    assert deliveries(item)["push"]["status"] == "failed"
    assert deliveries(item)["push"]["reason"] == "subscription_gone"
    assert deliveries(item)["push"]["attempts"] == 1
    assert await push_endpoints(api, ann.token) == []
    assert [x["status"] for x in push.refused] == [410]

    # The next notification finds no subscription at all.
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "Again",
                                         "body": "About your order", "channels": ["push"]})
    item = await inbox_item(api, ann.token, r.data["id"], settled=("suppressed", "failed"))
    assert deliveries(item)["push"]["reason"] == "no_address"


async def test_push_500_is_retried(api, push):
    ann = await customer(api)
    await subscribe_push(api, push, ann.token)
    push.fail_next(500)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "A note",
                                         "body": "About your order", "channels": ["push"], "priority": "high"})
    await push.wait_for(1, timeout=15)
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"))
    assert deliveries(item)["push"]["status"] == "sent" and deliveries(item)["push"]["attempts"] == 2
    assert push.received[0]["headers"]["Urgency"] == "high"


# Metrics ------------------------------------------------------------------------------------

async def test_metrics_count_deliveries_by_channel_and_status(api, sink):
    before_sent = await metric_value(api, "hub_notification_deliveries_total", channel="email", status="sent")
    before_suppressed = await metric_value(api, "hub_notification_deliveries_total", channel="sms",
                                           status="suppressed", reason="preference")
    ann = await customer(api)
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "A note",
                                         "body": "About your order"})
    await sink.wait_for(1, timeout=15)
    await inbox_item(api, ann.token, r.data["id"], settled=("sent", "suppressed"))
    assert await metric_value(api, "hub_notification_deliveries_total",
                              channel="email", status="sent") == before_sent + 1
    assert await metric_value(api, "hub_notification_deliveries_total", channel="sms", status="suppressed",
                              reason="preference") == before_suppressed + 1
