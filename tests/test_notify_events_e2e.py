"""Notifications caused by Kafka events and by stock changes (CONTRACT §3, §2).

`notification.requested` events put straight on the notifications topic as another
service would, duplicates acting once, poison messages dead-lettered with their reason
while the consumer goes on; back-in-stock alerts (one-shot) and low-stock alerts to admins.
"""

from __future__ import annotations

import pytest

from domain.notification_rules import notification_id
from tests.conftest import ADMIN_EMAIL
from tests.notify_e2e import extra_env, hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.notify_e2e import customer, deliveries, eventually, inbox, inbox_item, placed, quietly, requested_event



# notification.requested on Kafka ------------------------------------------------------------

async def test_requested_event_on_the_topic_is_delivered(api, topics, sink):
    ann = await customer(api)
    event = requested_event(ann.id, title="Spring sale", data={"campaign": "spring"}, channels=["email", "websocket"])
    await topics.send("notifications", event, key=ann.id)
    nid = notification_id(event["id"], "marketing_promo", ann.id)
    item = await inbox_item(api, ann.token, nid, settled=("sent",), timeout=15)
    assert item["title"] == "Spring sale" and item["data"] == {"campaign": "spring"}
    assert set(deliveries(item)) == {"email", "websocket"}
    [mail] = await sink.wait_for(1)
    assert mail["Subject"] == "Spring sale" and mail.rcpt_tos == [ann.email]


async def test_the_same_event_id_twice_acts_once(api, topics, sink):
    ann = await customer(api)
    event = requested_event(ann.id, title="Just once", channels=["email"])
    await topics.send("notifications", event, key=ann.id)
    await topics.send("notifications", event, key=ann.id)
    # A different event after both: once it is in, both copies were consumed (same key: same partition).
    marker = requested_event(ann.id, title="Marker", channels=["email"])
    await topics.send("notifications", marker, key=ann.id)
    await inbox_item(api, ann.token, notification_id(marker["id"], "marketing_promo", ann.id), timeout=15)
    await sink.wait_for(2)
    await quietly(1.5, lambda: len(sink.messages) == 2)
    assert sorted(m["Subject"] for m in sink.messages) == ["Just once", "Marker"]
    assert len((await inbox(api, ann.token))["items"]) == 2


async def test_poison_messages_are_dead_lettered_with_their_reason_and_the_consumer_goes_on(api, topics, sink):
    ann = await customer(api)
    await topics.send("notifications", b"{this is not json", key=ann.id)
    no_title = requested_event(ann.id)
    del no_title["data"]["title"]
    await topics.send("notifications", no_title, key=ann.id)
    await topics.send("notifications", requested_event("no-such-user"), key=ann.id)
    await topics.send("notifications", requested_event(ann.id, priority="critical"), key=ann.id)
    valid = requested_event(ann.id, title="After the poison", channels=["email"])
    await topics.send("notifications", valid, key=ann.id)

    await inbox_item(api, ann.token, notification_id(valid["id"], "marketing_promo", ann.id), timeout=15)
    [mail] = await sink.wait_for(1)
    assert mail["Subject"] == "After the poison"

    def notify_dlq(records):
        return [r for r in records if r["group"].endswith("hub-notify") and r["topic"].endswith("notifications")]
    dead = notify_dlq(await topics.read("dlq", until=lambda records: len(notify_dlq(records)) >= 4))
    reasons = [r["reason"] for r in dead]
    assert len(reasons) == 4, reasons
    assert reasons[0].startswith("invalid CloudEvent"), reasons[0]
    assert "title" in reasons[1], reasons[1]
    assert "unknown user" in reasons[2] and "no-such-user" in reasons[2], reasons[2]
    assert "priority" in reasons[3], reasons[3]
    assert dead[0]["value"] == "{this is not json"
    assert len((await inbox(api, ann.token))["items"]) == 1


# Stock ----------------------------------------------------------------------------------------

async def restock(api, admin, product_id, value):
    r = await api.call("POST", f"/api/v1/products/{product_id}/stock", {"set": value}, token=admin)
    assert r.status == 200 and r.data["stock"] == value, r


async def test_back_in_stock_notifies_each_watcher_once(api, sink):
    admin = await api.admin_token()
    product = await api.product(admin, name="Blue kettle", stock=0)
    ann = await customer(api)
    r = await api.call("POST", f"/api/v1/products/{product['id']}/stock-alerts", token=ann.token)
    assert r.status == 201, r
    r = await api.call("POST", "/api/v1/products/no-such-product/stock-alerts", token=ann.token)
    assert r.status == 404, r

    await restock(api, admin, product["id"], 5)
    item = await inbox_item(api, ann.token, type="back_in_stock", settled=("sent", "suppressed"), timeout=15)
    assert item["title"] == "Blue kettle is back in stock"
    assert item["data"]["product_id"] == product["id"]
    [mail] = await sink.wait_for(1)
    assert mail.rcpt_tos == [ann.email] and mail["Subject"] == "Blue kettle is back in stock"

    # Sold out and back again: the alert was one-shot. Bob, who asks now, is the marker
    # that the second restock's event was handled.
    await restock(api, admin, product["id"], 0)
    bob = await customer(api)
    r = await api.call("POST", f"/api/v1/products/{product['id']}/stock-alerts", token=bob.token)
    assert r.status == 201, r
    await restock(api, admin, product["id"], 5)
    await inbox_item(api, bob.token, type="back_in_stock", timeout=15)
    await sink.wait_for(2)
    await quietly(1.0, lambda: len(sink.messages) == 2)
    assert sink.messages[1].rcpt_tos == [bob.email]
    assert len((await inbox(api, ann.token))["items"]) == 1


async def test_an_order_crossing_the_low_stock_threshold_alerts_the_admins(api, sink):
    admin = await api.admin_token()
    product = await api.product(admin, name="Red mug", stock=12, low_stock_threshold=10)
    ann = await customer(api)
    await placed(api, ann.token, product["id"], quantity=3)  # 12 → 9: crosses 10

    item = await inbox_item(api, admin, type="stock_low", settled=("sent", "suppressed"), timeout=15)
    assert item["title"] == "Low stock: Red mug"
    assert item["data"]["product_id"] == product["id"] and item["data"]["available"] == 9
    mails = await sink.wait_for(2, timeout=15)  # the customer's order_created and the admin's alert
    alerts = [m for m in mails if m.rcpt_tos == [ADMIN_EMAIL]]
    assert [m["Subject"] for m in alerts] == ["Low stock: Red mug"]
    assert all(i["type"] != "stock_low" for i in (await inbox(api, ann.token))["items"])

    # Another order below the threshold is not a new crossing.
    await placed(api, ann.token, product["id"], quantity=1)
    await eventually(lambda: len(sink.messages) >= 3, 15, what="second order_created email")
    await quietly(1.5, lambda: len(sink.messages) == 3)
    assert len([i for i in (await inbox(api, admin))["items"] if i["type"] == "stock_low"]) == 1
