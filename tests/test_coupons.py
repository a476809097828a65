"""Coupons over real HTTP and Kafka (CONTRACT v2 §5): the admin endpoints, what a coupon
takes off an order (rounding written in docs/cart.md), every reason a coupon is refused,
redemptions that never exceed their limits under racing orders on two hubs sharing one
store, and the use given back exactly once on cancel and on the unpaid-order expiry.

Every hub start costs a few seconds, so related cases share one hub."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from config.settings import load_settings
from domain.clock import utcnow
from domain.events import cloud_event
from hub.wiring.server import HubServer
from tests.checkout_helpers import (COUPONS, O, cents, coupon, coupon_of, kafka_events, of_type, order,
                                    stock)
from tests.conftest import Api, interleave

pytestmark = [pytest.mark.timeout(120), pytest.mark.stores]


@pytest.fixture
def hub_env(hub_env):
    hub_env["HUB_SWEEP_INTERVAL_S"] = "3600"  # the tests run the sweeps themselves
    return hub_env


def code() -> str:
    return f"C{uuid.uuid4().hex[:10]}".upper()


def iso(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).isoformat()


async def test_admin_creates_lists_reads_and_deactivates_coupons(api):
    admin = await api.admin_token()
    user = await api.register()
    c = code()
    created = await coupon(api, admin, code=c.lower(), kind="percent", value="12.5", max_discount="5.00",
                           min_subtotal="20", max_redemptions=3, per_user_limit=2, ends_at=iso(timedelta(days=2)))
    assert created["code"] == c  # codes are case-insensitive, shown upper-case
    assert (created["kind"], created["value"], created["max_discount"], created["min_subtotal"]) == \
        ("percent", "12.50", "5.00", "20.00")
    assert (created["max_redemptions"], created["per_user_limit"], created["redemptions"], created["active"]) == \
        (3, 2, 0, True)
    assert (await api.call("POST", COUPONS, {"code": c, "kind": "amount", "value": "1"}, token=admin)).error_code \
        == "coupon_exists"
    assert (await coupon_of(api, admin, c.lower()))["code"] == c
    listed = await api.call("GET", COUPONS, token=admin)
    assert listed.status == 200 and c in [x["code"] for x in listed.data["items"]], listed

    r = await api.call("PATCH", f"{COUPONS}/{c}", {"active": False}, token=admin)
    assert r.status == 200 and r.data["active"] is False, r
    assert [x["code"] for x in (await api.call("GET", f"{COUPONS}?active=false", token=admin)).data["items"]] == [c]

    # Customers cannot manage coupons; nobody unauthenticated can.
    customer = user["access_token"]
    assert (await api.call("POST", COUPONS, {"code": code(), "kind": "amount", "value": "1"}, token=customer)).status == 403
    assert (await api.call("GET", f"{COUPONS}/{c}", token=customer)).status == 403
    assert (await api.call("PATCH", f"{COUPONS}/{c}", {"active": True}, token=customer)).status == 403
    assert (await api.call("GET", COUPONS)).status == 401
    assert (await api.call("GET", f"{COUPONS}/NOPE", token=admin)).error_code == "coupon_not_found"

    # Bad input: a clear 422 naming the field, nothing created.
    for body, field in [
        ({"code": "x" * 10_000, "kind": "amount", "value": "1"}, "code"),
        ({"code": "has space", "kind": "amount", "value": "1"}, "code"),
        ({"code": code(), "kind": "gift", "value": "1"}, "kind"),
        ({"code": code(), "kind": "percent", "value": "100.01"}, "value"),
        ({"code": code(), "kind": "percent", "value": "0"}, "value"),
        ({"code": code(), "kind": "amount", "value": "-1"}, "value"),
        ({"code": code(), "kind": "amount", "value": "1.005"}, "value"),
        ({"code": code(), "kind": "amount", "value": "1", "max_redemptions": 0}, "max_redemptions"),
        ({"code": code(), "kind": "amount", "value": "1", "per_user_limit": 10**9}, "per_user_limit"),
        ({"code": code(), "kind": "amount", "value": "1", "starts_at": iso(timedelta(days=1)),
          "ends_at": iso(timedelta(hours=1))}, "ends_at"),
        ({"code": code(), "kind": "amount", "value": "1", "ends_at": "2026-01-01T00:00:00"}, "ends_at"),
        ({"code": code(), "kind": "amount", "value": "1", "product_ids": ["p"] * 101}, "product_ids"),
    ]:
        r = await api.call("POST", COUPONS, body, token=admin)
        assert r.status == 422 and field in str(r.data["error"]["details"]), (body, r)
    assert (await api.call("GET", COUPONS, token=admin)).data["total"] == 1


async def test_discounts_round_down_to_the_cent_and_respect_cap_minimum_and_products(api):
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    kettle = await api.product(admin, price="19.99", stock=100)
    mug = await api.product(admin, price="3.33", stock=100)

    # 12.5 % of 3 × 19.99 = 59.97 → 7.49625 → 7.49 (rounded down, in the customer's disfavour by < 1 cent).
    pct = await coupon(api, admin, code=code(), kind="percent", value="12.5")
    r = await order(api, token, (kettle["id"], 3), coupon_code=pct["code"])
    assert r.status == 201, r
    assert (r.data["subtotal"], r.data["discount"], r.data["total"], r.data["coupon_code"]) == \
        ("59.97", "7.49", "52.48", pct["code"])

    # The cap wins over the percentage.
    capped = await coupon(api, admin, code=code(), kind="percent", value="50", max_discount="10.00",
                          per_user_limit=5)
    r = await order(api, token, (kettle["id"], 1), coupon_code=capped["code"])
    assert (r.data["discount"], r.data["total"]) == ("9.99", "10.00"), r  # 50 % of 19.99 = 9.995 → 9.99 < cap
    r = await order(api, token, (kettle["id"], 2), coupon_code=capped["code"])
    assert (r.data["discount"], r.data["total"]) == ("10.00", "29.98"), r

    # An amount never takes more than the lines it applies to; product_ids restricts those lines.
    only_mugs = await coupon(api, admin, code=code(), kind="amount", value="50.00", product_ids=[mug["id"]])
    r = await order(api, token, (kettle["id"], 1), (mug["id"], 2), coupon_code=only_mugs["code"])
    assert (r.data["subtotal"], r.data["discount"], r.data["total"]) == ("26.65", "6.66", "19.99"), r
    assert cents(r.data["subtotal"]) - cents(r.data["discount"]) - cents(r.data["points_value"]) == cents(r.data["total"])

    # min_subtotal is compared with the subtotal before the discount.
    minimum = await coupon(api, admin, code=code(), kind="amount", value="5", min_subtotal="40.00", per_user_limit=5)
    r = await order(api, token, (kettle["id"], 2), coupon_code=minimum["code"])
    assert r.status == 422 and r.data["error"]["details"]["reason"] == "min_subtotal", r
    r = await order(api, token, (kettle["id"], 3), coupon_code=minimum["code"].lower())
    assert r.status == 201 and r.data["discount"] == "5.00", r


async def test_every_reason_a_coupon_is_refused_changes_nothing(api):
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    product = await api.product(admin, price="10.00", stock=50)
    other = await api.product(admin, price="10.00", stock=50)
    later = await coupon(api, admin, code=code(), kind="amount", value="1", starts_at=iso(timedelta(hours=1)))
    past = await coupon(api, admin, code=code(), kind="amount", value="1", starts_at=iso(timedelta(days=-2)),
                        ends_at=iso(timedelta(days=-1)))
    minimum = await coupon(api, admin, code=code(), kind="amount", value="1", min_subtotal="100")
    once = await coupon(api, admin, code=code(), kind="amount", value="1")
    one_left = await coupon(api, admin, code=code(), kind="amount", value="1", max_redemptions=1, per_user_limit=5)
    withdrawn = await coupon(api, admin, code=code(), kind="amount", value="1")
    elsewhere = await coupon(api, admin, code=code(), kind="amount", value="1", product_ids=[other["id"]])
    assert (await api.call("PATCH", f"{COUPONS}/{withdrawn['code']}", {"active": False}, token=admin)).status == 200
    assert (await order(api, token, (product["id"], 1), coupon_code=once["code"])).status == 201
    someone = (await api.register())["access_token"]
    assert (await order(api, someone, (product["id"], 1), coupon_code=one_left["code"])).status == 201

    before = await stock(api, product["id"])
    for coupon_code, reason in [("NOSUCHCODE", "unknown"), (later["code"], "not_started"), (past["code"], "expired"),
                                (minimum["code"], "min_subtotal"), (once["code"], "per_user_limit"),
                                (one_left["code"], "exhausted"), (withdrawn["code"], "expired"),
                                (elsewhere["code"], "not_applicable")]:
        r = await order(api, token, (product["id"], 2), coupon_code=coupon_code)
        assert r.status == 422 and r.error_code == "coupon_invalid", (coupon_code, r)
        assert r.data["error"]["details"]["reason"] == reason, (coupon_code, r)
    r = await order(api, token, (product["id"], 1), coupon_code="x" * 10_000)
    assert r.status == 422 and r.error_code == "validation_failed", r
    assert await stock(api, product["id"]) == before
    assert (await coupon_of(api, admin, one_left["code"]))["redemptions"] == 1
    assert (await coupon_of(api, admin, once["code"]))["redemptions"] == 1
    orders = (await api.call("GET", O, token=token)).data
    assert orders["total"] == 1, orders  # only the first order with `once` was placed


async def test_racing_orders_on_two_hubs_never_redeem_more_than_allowed(api, hub_server, hub_env, monkeypatch):
    """5 redemptions, 30 orders at once from 15 users, half through each of two hubs that
    share one store, every store call yielding (so the orders really interleave)."""
    second = HubServer(load_settings(hub_env), mongo_client=hub_server.hub.mongo_client)
    await second.start()
    try:
        interleave(hub_server.hub, monkeypatch)
        interleave(second.hub, monkeypatch)
        apis = [api, Api(f"http://127.0.0.1:{second.port}")]
        admin = await api.admin_token()
        product = await api.product(admin, price="20.00", stock=1000)
        c = await coupon(api, admin, code=code(), kind="percent", value="10", max_redemptions=5, per_user_limit=2)
        users = [(await api.register())["access_token"] for _ in range(15)]
        results = await asyncio.gather(*(
            order(apis[i % 2], users[i % 15], (product["id"], 1), coupon_code=c["code"]) for i in range(30)))
        placed = [r for r in results if r.status == 201]
        refused = [r for r in results if r.status != 201]
        assert len(placed) == 5, [r.status for r in results]
        assert all(r.data["discount"] == "2.00" and r.data["total"] == "18.00" for r in placed), placed
        assert all(r.status == 422 and r.data["error"]["details"]["reason"] in ("exhausted", "per_user_limit")
                   for r in refused), refused
        assert sum(r.data["error"]["details"]["reason"] == "exhausted" for r in refused) >= 20
        assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 5
        assert await stock(api, product["id"]) == 995  # refused orders gave their stock back
        doc = await hub_server.hub.stores.coupons.col.find_one({"_id": c["code"]})
        assert doc["holds"] == [] and sum(doc["users"].values()) == 5, doc

        events = await kafka_events(hub_server.hub, "orders", until=lambda es: len(
            of_type(es, "coupon.redeemed", code=c["code"])) - len(of_type(es, "coupon.released", code=c["code"])) == 5
            and len(of_type(es, "coupon.redeemed", code=c["code"])) >= 5)
        redeemed = {e["data"]["order_id"] for e in of_type(events, "coupon.redeemed", code=c["code"])}
        released = {e["data"]["order_id"] for e in of_type(events, "coupon.released", code=c["code"])}
        assert redeemed - released == {r.data["id"] for r in placed}
    finally:
        await second.stop()


async def test_the_per_user_limit_holds_under_racing_orders(api, interleaved):
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    product = await api.product(admin, price="10.00", stock=100)
    c = await coupon(api, admin, code=code(), kind="amount", value="1.00", per_user_limit=2)
    results = await asyncio.gather(*(order(api, token, (product["id"], 1), coupon_code=c["code"]) for _ in range(8)))
    assert sorted(r.status for r in results) == [201] * 2 + [422] * 6, results
    assert {r.data["error"]["details"]["reason"] for r in results if r.status == 422} == {"per_user_limit"}
    other = (await api.register())["access_token"]
    assert (await order(api, other, (product["id"], 1), coupon_code=c["code"])).status == 201
    assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 3


async def test_cancel_gives_the_use_back_once_and_says_so_on_kafka(api, hub_server, interleaved):
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    product = await api.product(admin, price="10.00", stock=100)
    c = await coupon(api, admin, code=code(), kind="amount", value="2.50", max_redemptions=1)
    placed = await order(api, token, (product["id"], 1), coupon_code=c["code"])
    assert placed.status == 201 and placed.data["total"] == "7.50", placed
    assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 1
    results = await asyncio.gather(*(api.call("POST", f"{O}/{placed.data['id']}/cancel", token=t)
                                     for t in (token, admin, token)))
    assert sorted(r.status for r in results) == [200, 409, 409], results
    await hub_server.hub.services.checkout.sweep()
    assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 0
    # The use is back: another order may take it, and only one.
    again = await order(api, token, (product["id"], 1), coupon_code=c["code"])
    assert again.status == 201, again
    assert (await order(api, token, (product["id"], 1), coupon_code=c["code"])).status == 422

    oid = placed.data["id"]
    events = await kafka_events(hub_server.hub, "orders", until=lambda es: of_type(es, "coupon.released", order_id=oid))
    assert len(of_type(events, "coupon.redeemed", order_id=oid)) == 1
    [released] = of_type(events, "coupon.released", order_id=oid)
    assert released["data"]["code"] == c["code"] and released["data"]["reason"] == "order_cancelled"
    assert released["subject"] == placed.data["user_id"]


async def test_an_unpaid_order_expiring_while_cancelled_gives_the_use_back_once(hub_env, monkeypatch):
    hub_env["ORDER_PAYMENT_TIMEOUT_S"] = "1"
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        hub = server.hub
        interleave(hub, monkeypatch)
        admin = await api.admin_token()
        token = (await api.register())["access_token"]
        product = await api.product(admin, price="10.00", stock=100)
        c = await coupon(api, admin, code=code(), kind="amount", value="1.00", max_redemptions=10, per_user_limit=5)
        placed = [await order(api, token, (product["id"], 1), coupon_code=c["code"], key=str(i)) for i in range(3)]
        assert all(r.status == 201 for r in placed), placed
        assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 3
        def later():  # all three are now past the payment timeout
            return utcnow() + timedelta(seconds=1.2)
        monkeypatch.setattr(hub.services.orders, "clock", later)
        monkeypatch.setattr(hub.services.checkout, "clock", later)
        # The owner cancels one while two sweeps (two processes) expire all of them.
        results = await asyncio.gather(api.call("POST", f"{O}/{placed[0].data['id']}/cancel", token=token),
                                       hub.services.orders.sweep(), hub.services.orders.sweep(), return_exceptions=True)
        assert not any(isinstance(r, Exception) for r in results), results
        await hub.services.checkout.sweep()
        for r in placed:
            got = (await api.call("GET", f"{O}/{r.data['id']}", token=token)).data
            assert got["status"] == "cancelled", got
        assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 0
        assert await stock(api, product["id"]) == 100
        doc = await hub.stores.coupons.col.find_one({"_id": c["code"]})
        assert doc["holds"] == [] and doc["users"] == {placed[0].data["user_id"]: 0}, doc
    finally:
        await server.stop()


async def test_a_placement_whose_process_died_gives_the_use_back_through_the_sweep(api, hub_server):
    """The coupon was taken, then the process died before the order was placed: the sweep
    gives the use back once, whether it finds the order or only the coupon's marker."""
    hub = hub_server.hub
    admin = await api.admin_token()
    user = await api.register()
    await api.product(admin, price="10.00", stock=10)
    c = await coupon(api, admin, code=code(), kind="amount", value="1.00", max_redemptions=2)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    for order_id in ("dead-with-order", "dead-without-order"):
        doc = {"_id": order_id, "user_id": user["user"]["id"], "coupon_code": c["code"], "status": "placing",
               "currency": "USD", "discount_minor": 100, "placing_expires_at": past, "items": []}
        assert await hub.stores.coupons.take(c["code"], user["user"]["id"], limit=2, per_user_limit=5,
                                           marker=f"{order_id}:coupon", expires_at=past, now=past,
                                           event=cloud_event("coupon.redeemed", "/hub-test", {"order_id": order_id}),
                                           key=order_id)
        if order_id == "dead-with-order":
            await hub.stores.orders.col.insert_one(doc)
    assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 2
    await asyncio.gather(hub.services.orders.sweep(), hub.services.checkout.sweep(), hub.services.checkout.sweep())
    await hub.services.checkout.sweep()
    assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 0
    assert (await hub.stores.coupons.col.find_one({"_id": c["code"]}))["holds"] == []
    assert await hub.stores.orders.get("dead-with-order", include_hidden=True) is None
