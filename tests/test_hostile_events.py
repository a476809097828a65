"""Poison events: each kind a producer could send (absurd amounts, TTLs and points deltas,
wrong types, JSON no reader should take, the hub's own source forged) lands in `dlq` with
its reason, and a valid event right behind it on the same partition takes effect within
seconds. Also POST /api/v1/events refuses the hub's own source."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

import pytest

from hub.adapters.event_signing import EventSigner
from tests.conftest import SERVICE_KEY, get_order, placed, settled


OTHER = "urn:test:other-service"


def event(event_type: str, data: dict, *, source: str = OTHER, subject: str | None = None) -> dict:
    e = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": source, "type": event_type,
         "time": datetime.now(timezone.utc).isoformat(), "datacontenttype": "application/json", "data": data}
    if subject:
        e["subject"] = subject
    return e


async def eventually(probe, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value or loop.time() >= deadline:
            return value
        await asyncio.sleep(0.1)


async def dead_letters(topics, event_id: str, count: int = 1, timeout: float = 10.0, group: str | None = None) -> list[dict]:
    """The dlq records of the event `event_id`: one per consumer group (or of `group`) that
    read it, waiting until there are `count`."""
    def mine(records):
        return [r for r in records if r.get("value") and event_id in r["value"]
                and (group is None or r["group"] == group)]
    return mine(await topics.read("dlq", until=lambda rs: len(mine(rs)) >= count, timeout=timeout))


async def customer_with_order(api):
    admin = await api.admin_token()
    product = await api.product(admin, price="12.50", stock=100)
    user = await api.register()
    order = await placed(api, user["access_token"], product["id"])
    return user["access_token"], user["user"]["id"], order


def payment(order: dict, user_id: str, **overrides) -> dict:
    data = {"order_id": order["id"], "user_id": user_id, "amount": "12.50", "currency": "USD",
            "provider": "acme-pay", "payment_id": uuid.uuid4().hex, **overrides}
    return event("payment.succeeded", data, subject=user_id)


async def confirmed(api, token, order_id) -> bool:
    return (await get_order(api, token, order_id))["status"] == "confirmed"


# Payments ---------------------------------------------------------------------------------

@pytest.mark.parametrize("amount, code", [
    ("9e999999", "rejected"),  # decimal.Overflow: retried forever before
    (10**30, "invalid_event"),  # an integer no JSON reader keeps
    (1e300, "invalid_event"),
    ("-12.50", "rejected"),
    ({"value": 1250}, "rejected"),
    ([1, 2], "rejected"),
    (None, "rejected"),
])
async def test_a_poison_payment_is_dead_lettered_and_the_next_one_on_its_partition_goes(api, topics, amount, code):
    token, user_id, order = await customer_with_order(api)
    poison = payment(order, user_id, amount=amount)
    await topics.send("payments", poison, key=order["id"])
    await topics.send("payments", payment(order, user_id), key=order["id"])

    assert await eventually(lambda: confirmed(api, token, order["id"])), "the valid payment behind it stalled"
    [record] = await dead_letters(topics, poison["id"], group="hub-payments")
    assert record["code"] == code and record["reason"], record
    after = await get_order(api, token, order["id"])
    assert [h["status"] for h in after["status_history"]] == ["pending", "confirmed"]


async def test_payment_ids_and_currency_are_bounded(api, topics):
    token, user_id, order = await customer_with_order(api)
    poisons = [payment(order, user_id, payment_id="p" * 10_000), payment(order, user_id, currency="USD" * 1000),
               payment(order, user_id, provider={"nested": True}) | {"type": "payment.failed"}]
    for poison in poisons:
        await topics.send("payments", poison, key=order["id"])
    await topics.send("payments", payment(order, user_id), key=order["id"])
    assert await eventually(lambda: confirmed(api, token, order["id"]))
    for poison in poisons[:2]:
        [record] = await dead_letters(topics, poison["id"], group="hub-payments")
        assert record["code"] == "rejected", record


# Orders -----------------------------------------------------------------------------------

@pytest.mark.parametrize("note", [{"$set": {"status": "delivered"}}, "n" * 100_000, ["a"] * 10])
async def test_a_poison_order_event_is_dead_lettered_and_the_next_one_goes(api, topics, note):
    token, user_id, order = await customer_with_order(api)
    poison = event("order.cancelled", {"order_id": order["id"], "user_id": user_id, "note": note})
    await topics.send("orders", poison, key=order["id"])
    await topics.send("orders", event("order.cancelled", {"order_id": order["id"], "user_id": user_id,
                                                          "note": "customer asked"}), key=order["id"])
    async def cancelled():
        return (await get_order(api, token, order["id"]))["status"] == "cancelled"
    assert await eventually(cancelled)
    [record] = await dead_letters(topics, poison["id"])
    assert record["code"] == "rejected" and "note" in record["reason"], record
    history = (await get_order(api, token, order["id"]))["status_history"]
    assert [h.get("note") for h in history if h["status"] == "cancelled"] == ["customer asked"], history


# Points -----------------------------------------------------------------------------------

async def balance(api, token) -> int:
    r = await api.call("GET", "/api/v1/users/me/points", token=token)
    assert r.status == 200, r
    return r.data["balance"]


@pytest.mark.parametrize("delta, code", [
    (10**15, "rejected"), (2**63, "invalid_event"), (10**40, "invalid_event"), (-5, "rejected"), ("100", "rejected"),
    (1.5, "rejected"), (True, "rejected"), (None, "rejected"),
])
async def test_a_poison_points_award_is_dead_lettered_and_the_next_one_goes(api, topics, delta, code):
    user = await api.register()
    token, user_id = user["access_token"], user["user"]["id"]
    poison = event("points.awarded", {"user_id": user_id, "delta": delta, "balance": 0, "reason": "bonus"})
    await topics.send("points", poison, key=user_id)
    await topics.send("points", event("points.awarded", {"user_id": user_id, "delta": 40, "balance": 40,
                                                         "reason": "welcome"}), key=user_id)

    async def credited():
        return await balance(api, token) == 40
    assert await eventually(credited), "the valid award behind the poison one stalled"
    [record] = await dead_letters(topics, poison["id"], group="hub-points")
    assert record["code"] == code, record


# Notifications ----------------------------------------------------------------------------

def requested(user_id: str, **data) -> dict:
    return event("notification.requested", {"user_id": user_id, "type": "promo", "title": "Sale",
                                             "body": "20% off", "channels": ["websocket"], **data},
                 subject=user_id)


async def inbox_titles(api, token) -> list[str]:
    r = await api.call("GET", "/api/v1/users/me/notifications", token=token)
    assert r.status == 200, r
    return [i["title"] for i in r.data["items"]]


@pytest.mark.parametrize("poison, code", [
    ({"expires_after_s": 10**12}, "rejected"),  # a date past year 9999: OverflowError, retried forever before
    ({"expires_after_s": 10**30}, "invalid_event"),
    ({"expires_after_s": "3600"}, "rejected"),
    ({"title": ["not", "a", "string"]}, "rejected"),
    ({"title": "t" * 100_000}, "rejected"),
    ({"channels": [{"unhashable": 1}]}, "unprocessable"),  # a TypeError no rule foresaw
    ({"priority": {"x": 1}}, "rejected"),
    ({"data": "not an object"}, "rejected"),
])
async def test_a_poison_notification_request_is_dead_lettered_and_the_next_one_arrives(api, topics, poison, code):
    user = await api.register()
    token, user_id = user["access_token"], user["user"]["id"]
    bad = requested(user_id, **poison)
    await topics.send("notifications", bad, key=user_id)
    await topics.send("notifications", requested(user_id, title="After the poison"), key=user_id)

    async def arrived():
        return "After the poison" in await inbox_titles(api, token)
    assert await eventually(arrived), "the valid request behind the poison one stalled"
    [record] = await dead_letters(topics, bad["id"])
    assert record["group"] == "hub-notify" and record["code"] == code, record
    assert await inbox_titles(api, token) == ["After the poison"]


@pytest.mark.parametrize("raw, what", [
    (b"[" * 100_000 + b"]" * 100_000, "nesting past the parser's recursion limit"),
    (b'{"specversion":"1.0","id":"x","source":"s","type":"notification.requested","data":{"n":' + b"9" * 5000 + b"}}",
     "an integer literal of 5000 digits"),
    (b"\xff\xfe not utf-8", "bytes that are not UTF-8"),
])
async def test_unreadable_messages_are_dead_lettered_and_the_next_one_arrives(api, topics, raw, what):
    user = await api.register()
    token, user_id = user["access_token"], user["user"]["id"]
    await topics.send("notifications", raw, key=user_id)
    await topics.send("notifications", requested(user_id, title="Still moving"), key=user_id)

    async def arrived():
        return "Still moving" in await inbox_titles(api, token)
    assert await eventually(arrived), what
    records = await topics.read("dlq", until=lambda rs: any(r["code"] == "invalid_event" and r["key"] == user_id
                                                            for r in rs))
    assert any(r["code"] == "invalid_event" and r["key"] == user_id for r in records), what


async def test_deeply_nested_data_is_dead_lettered(api, topics):
    user = await api.register()
    token, user_id = user["access_token"], user["user"]["id"]
    nested: dict = {}
    for _ in range(50):
        nested = {"n": nested}
    bad = requested(user_id, data=nested)
    await topics.send("notifications", bad, key=user_id)
    await topics.send("notifications", requested(user_id, title="Flat"), key=user_id)

    async def arrived():
        return "Flat" in await inbox_titles(api, token)
    assert await eventually(arrived)
    [record] = await dead_letters(topics, bad["id"])
    assert record["code"] == "invalid_event" and "deeper" in record["reason"], record


# The hub's own source -----------------------------------------------------------------------

async def test_a_forged_hub_event_is_ignored_and_a_signed_one_is_not(api, topics, hub_server):
    """A refund notification for an unpaid order, claiming to come from the hub itself."""
    token, user_id, order = await customer_with_order(api)
    own = hub_server.hub.settings.event_source
    forged = event("order.refunded", {"order_id": order["id"], "number": order["number"], "user_id": user_id,
                                      "status": "refunded", "total": order["total"], "currency": "USD"},
                   source=own, subject=user_id)
    await topics.send("orders", forged, key=order["id"])
    # Every group that reads the orders topic refuses it.
    records = await dead_letters(topics, forged["id"], count=3)
    assert {r["code"] for r in records} == {"forged_source"}, records
    assert {r["group"] for r in records} == {"hub-orders", "hub-notify", "hub-realtime"}

    # A valid event behind it on the same partition takes effect; the forged one never did.
    await topics.send("orders", event("order.cancelled", {"order_id": order["id"], "user_id": user_id}),
                      key=order["id"])
    async def cancelled():
        return (await get_order(api, token, order["id"]))["status"] == "cancelled"
    assert await eventually(cancelled)
    await settled(hub_server.hub)
    r = await api.call("GET", "/api/v1/users/me/notifications", token=token)
    assert not [i for i in r.data["items"] if "refund" in i["type"]], r.data["items"]
    assert "refunded" not in [h["status"] for h in (await get_order(api, token, order["id"]))["status_history"]]

    # The same bytes signed with the hub's key are the hub's own (skipped by hub-orders: no dlq).
    kafka = hub_server.hub.kafka
    signed = dict(forged, id=uuid.uuid4().hex)
    value = json.dumps(signed).encode()
    await kafka.producer.send_and_wait(kafka.topic("orders"), value, key=order["id"].encode(),
                                       headers=kafka.signer.headers(value))
    # …while a signature made with any other key is not.
    wrong = dict(forged, id=uuid.uuid4().hex)
    value = json.dumps(wrong).encode()
    await kafka.producer.send_and_wait(kafka.topic("orders"), value, key=order["id"].encode(),
                                       headers=EventSigner("not-the-hubs-secret").headers(value))
    assert len(await dead_letters(topics, wrong["id"], count=3)) == 3
    assert await dead_letters(topics, signed["id"], count=1, timeout=1.0) == []


async def test_posting_an_event_with_the_hubs_source_is_refused(api, topics, hub_server):
    token, user_id, order = await customer_with_order(api)
    forged = event("order.refunded", {"order_id": order["id"], "user_id": user_id},
                   source=hub_server.hub.settings.event_source)
    r = await api.call("POST", "/api/v1/events", forged, headers={"X-API-Key": SERVICE_KEY})
    assert r.status == 422 and r.error_code == "reserved_source", r
    assert r.data["error"]["details"][0]["field"] == "source"
    published = await topics.read("orders")  # to its end: a refusal is answered after nothing was sent
    assert forged["id"] not in [e["id"] for e in published]
    # Any other source goes through.
    r = await api.call("POST", "/api/v1/events", dict(forged, source=OTHER, id=uuid.uuid4().hex),
                       headers={"X-API-Key": SERVICE_KEY})
    assert r.status == 202, r


async def test_dead_letters_are_counted_with_bounded_labels(api, topics):
    user = await api.register()
    bad = requested(user["user"]["id"], expires_after_s=10**12)
    await topics.send("notifications", bad, key=user["user"]["id"])
    await dead_letters(topics, bad["id"])
    r = await api.call("GET", "/metrics")
    lines = [line for line in str(r.data).splitlines() if line.startswith("hub_events_dead_lettered_total{")]
    assert any('code="rejected"' in line and 'group="' in line for line in lines), lines
    assert all(any(f'code="{c}"' in line for c in ("invalid_event", "forged_source", "rejected", "unprocessable",
                                                    "batch_unprocessable")) for line in lines), lines
