"""Loyalty points over real HTTP and Kafka (CONTRACT §2 "Payments and points", §3):
points earned by paying an order (signed Stripe webhooks, offline payments), taken back by
refunds, spent in the points mall, credited by other services' `points.awarded` events,
and the sweep that finishes a redemption whose process died half-way.

Every hub start costs a few seconds, so related cases share one hub."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from tornado.httpclient import AsyncHTTPClient

from config.settings import load_settings
from domain.clock import utcnow
from hub.wiring.server import HubServer
from tests.conftest import Api, get_order, kafka_records, placed, settled
from tests.stripe_fake import event, refunded_charge, sign, succeeded_intent

pytestmark = [pytest.mark.stores]

WHSEC = "whsec_points_test"
O = "/api/v1/orders"
POINTS = "/api/v1/users/me/points"
MALL = "/api/v1/points/redemptions"
WEBHOOK = "/api/v1/webhooks/stripe"
ENTRY_FIELDS = {"id", "delta", "reason", "order_id", "at", "expires_at"}


@pytest.fixture
def hub_env(hub_env):
    hub_env.update({
        "STRIPE_WEBHOOK_SECRET": WHSEC,
        "HUB_SWEEP_INTERVAL_S": "3600",  # the tests run the sweeps themselves
    })
    return hub_env


# Helpers ---------------------------------------------------------------------------------

async def webhook(api, payload: dict):
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": sign(body, WHSEC)}
    return await api.call("POST", WEBHOOK, body=body, headers=headers)


def cents(order: dict) -> int:
    return int(Decimal(order["total"]) * 100)


async def pay(api, token: str, order: dict, pi: str | None = None) -> tuple[str, dict]:
    """A signed payment_intent.succeeded for the whole order: (intent id, the event sent)."""
    pi = pi or "pi_" + uuid.uuid4().hex[:24]
    sent = event("payment_intent.succeeded", succeeded_intent(amount=cents(order), order_id=order["id"], pi_id=pi))
    r = await webhook(api, sent)
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert (await get_order(api, token, order["id"]))["status"] == "confirmed"
    return pi, sent


async def refund(api, order: dict, pi: str, cumulative: int, *, charge_id: str | None = None):
    r = await webhook(api, event("charge.refunded", refunded_charge(
        amount=cents(order), amount_refunded=cumulative, payment_intent=pi, order_id=order["id"], charge_id=charge_id)))
    assert r.status == 200 and r.data["received"] is True, r
    return r


async def points_of(api, token: str) -> dict:
    r = await api.call("GET", POINTS, token=token)
    assert r.status == 200, r
    assert set(r.data) >= {"balance", "entries"}, r.data
    assert isinstance(r.data["balance"], int) and r.data["balance"] >= 0, r.data
    for entry in r.data["entries"]:
        assert set(entry) >= ENTRY_FIELDS, entry
        assert isinstance(entry["delta"], int), entry
    return r.data


async def poll_balance(api, token: str, wanted: int, timeout: float = 15.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        account = await points_of(api, token)
        if account["balance"] == wanted or loop.time() >= deadline:
            return account
        await asyncio.sleep(0.1)


async def stock_of(api, product_id: str) -> int:
    r = await api.call("GET", f"/api/v1/products/{product_id}")
    assert r.status == 200, r
    return r.data["stock"]


async def holds_of(hub, product_id: str) -> list[dict]:
    doc = await hub.stores.products.col.find_one({"_id": product_id}, {"holds": 1})
    return doc.get("holds", [])


async def redeem(api, token: str, product_id, quantity=1):
    return await api.call("POST", MALL, {"product_id": product_id, "quantity": quantity}, token=token)


async def records(hub, topic: str, *, until=None, timeout: float | None = None) -> list[tuple[str | None, dict]]:
    """(key, event) of everything on `topic` of this hub, as `kafka_records` reads them."""
    return await kafka_records(hub.kafka.bootstrap_servers, hub.kafka.topic(topic), until=until, timeout=timeout,
                               decode=lambda m: (m.key.decode() if m.key else None, json.loads(m.value)))


def of_type(found, event_type: str, **data) -> list[tuple[str | None, dict]]:
    return [(k, e) for k, e in found if e.get("type") == event_type
            and all(e.get("data", {}).get(name) == value for name, value in data.items())]


def external(event_type: str, data: dict, *, source: str = "/marketing", event_id: str | None = None) -> dict:
    return {"specversion": "1.0", "id": event_id or uuid.uuid4().hex, "source": source, "type": event_type,
            "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json", "data": data}


def when(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


async def customer(api):
    user = await api.register()
    return user["access_token"], user["user"]["id"]


# 1. Earning, end to end ------------------------------------------------------------------

async def test_paying_an_order_earns_its_total_in_points_and_says_so_on_kafka(api, hub_server):
    hub = hub_server.hub
    admin = await api.admin_token()
    token, user_id = await customer(api)
    product = await api.product(admin, price="12.50", stock=100)
    order = await placed(api, token, product["id"], 2)
    assert order["total"] == "25.00", order
    # Nothing is earned before the money comes.
    account = await points_of(api, token)
    assert (account["balance"], account["entries"]) == (0, []), account

    before = utcnow()
    pi, _ = await pay(api, token, order)
    after = utcnow()

    payments = await records(hub, "payments", until=lambda rs: of_type(rs, "payment.succeeded", order_id=order["id"]))
    [(_, paid)] = of_type(payments, "payment.succeeded", order_id=order["id"])
    assert (paid["data"]["amount"], paid["data"]["currency"], paid["data"]["provider"], paid["data"]["payment_id"],
            paid["data"]["user_id"]) == ("25.00", "USD", "stripe", pi, user_id), paid

    points = await records(hub, "points", until=lambda rs: of_type(rs, "points.awarded", user_id=user_id))
    [(key, awarded)] = of_type(points, "points.awarded", user_id=user_id)
    assert key == user_id
    assert (awarded["specversion"], awarded["source"], awarded["subject"], awarded["datacontenttype"]) == (
        "1.0", "/hub", user_id, "application/json"), awarded
    assert awarded["id"] and awarded["time"], awarded
    data = awarded["data"]
    assert (data["user_id"], data["delta"], data["balance"], data["order_id"]) == (user_id, 25, 25, order["id"]), data
    assert isinstance(data["reason"], str) and data["reason"], data

    account = await points_of(api, token)
    assert account["balance"] == 25, account
    [entry] = account["entries"]
    assert (entry["delta"], entry["order_id"], entry["reason"]) == (25, order["id"], data["reason"]), entry
    at, expires = when(entry["at"]), when(entry["expires_at"])
    assert before - timedelta(seconds=1) <= at <= after + timedelta(seconds=1), (before, entry, after)
    assert abs((expires - at) - timedelta(days=365)) < timedelta(minutes=1), entry

    # The hub's own points.awarded, read back by its own consumer, is not credited again.
    await settled(hub)
    assert (await points_of(api, token))["balance"] == 25


# 2. POINTS_PER_UNIT ----------------------------------------------------------------------

async def test_points_per_unit_scales_and_floors_the_total(hub_env):
    hub_env["POINTS_PER_UNIT"] = "1.5"
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        admin = await api.admin_token()
        token, user_id = await customer(api)
        cases = [("10.99", 16), ("3.33", 4), ("0.66", 0)]  # 16.485, 4.995 (not rounded up), 0.99 (nothing)
        expected = 0
        for price, points in cases:
            product = await api.product(admin, price=price, stock=5)
            order = await placed(api, token, product["id"])
            assert order["total"] == price, order
            await pay(api, token, order)
            expected += points
            account = await points_of(api, token)
            assert account["balance"] == expected == sum(e["delta"] for e in account["entries"]), (price, account)
            mine = [e for e in account["entries"] if e["order_id"] == order["id"]]
            assert [e["delta"] for e in mine] == ([points] if points else []), (price, account)
        assert expected == math.floor(Decimal("10.99") * Decimal("1.5")) + 4
    finally:
        await server.stop()


# 3. Once per order -----------------------------------------------------------------------

async def test_points_are_awarded_once_per_order_whatever_pays_it_again(api, hub_server, interleaved):
    hub = hub_server.hub
    admin = await api.admin_token()
    token, user_id = await customer(api)
    product = await api.product(admin, price="12.50", stock=100)
    order = await placed(api, token, product["id"], 2)
    pi, first = await pay(api, token, order)
    assert (await points_of(api, token))["balance"] == 25

    # The same event again (a replay), a second success event for the same intent, and an
    # offline payment recorded by an admin for the same order.
    r = await webhook(api, first)
    assert r.status == 200 and r.data == {"received": True, "duplicate": True}, r
    again = event("payment_intent.succeeded", succeeded_intent(amount=2500, order_id=order["id"], pi_id=pi))
    r = await webhook(api, again)
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    r = await api.call("POST", f"{O}/{order['id']}/payments", {"amount": "25.00", "method": "offline"}, token=admin)
    assert r.status in (200, 201, 409), r

    # Another order, paid by everything at once.
    second = await placed(api, token, product["id"], 2)
    pi2 = "pi_" + uuid.uuid4().hex[:24]
    obj = succeeded_intent(amount=2500, order_id=second["id"], pi_id=pi2)
    results = await asyncio.gather(
        *(webhook(api, event("payment_intent.succeeded", obj)) for _ in range(4)),
        api.call("POST", f"{O}/{second['id']}/payments", {"amount": "25.00", "method": "offline"}, token=admin),
        api.call("POST", f"{O}/{second['id']}/payments", {"amount": "25.00", "method": "offline", "reference": "t-1"},
                 token=admin),
    )
    assert [r.status for r in results[:4]] == [200] * 4, results
    assert all(r.status in (200, 201, 409) for r in results[4:]), results
    assert (await get_order(api, token, second["id"]))["status"] == "confirmed"

    def awards(rs):
        return [e for _, e in of_type(rs, "points.awarded", user_id=user_id)]

    await settled(hub)
    found = await records(hub, "points")
    assert sorted(e["data"]["order_id"] for e in awards(found)) == sorted([order["id"], second["id"]]), awards(found)
    assert sorted(e["data"]["balance"] for e in awards(found)) == [25, 50]
    account = await points_of(api, token)
    assert account["balance"] == 50, account
    assert sorted((e["order_id"], e["delta"]) for e in account["entries"]) == sorted(
        [(order["id"], 25), (second["id"], 25)]), account


# 4. Refunds take points back -------------------------------------------------------------

async def test_refunds_take_back_points_in_proportion_and_never_below_zero(api, hub_server):
    hub = hub_server.hub
    admin = await api.admin_token()
    product = await api.product(admin, price="12.50", stock=100)
    mall = await api.product(admin, price="1.00", stock=100, points_price=5)

    # Partly, then in full.
    token, user_id = await customer(api)
    order = await placed(api, token, product["id"], 2)
    pi, _ = await pay(api, token, order)
    charge_id = "ch_" + uuid.uuid4().hex[:24]
    await refund(api, order, pi, 1000, charge_id=charge_id)
    account = await points_of(api, token)
    assert account["balance"] == 15, account
    [reversal] = [e for e in account["entries"] if e["delta"] < 0]
    assert (reversal["delta"], reversal["order_id"]) == (-10, order["id"]), reversal
    assert reversal["reason"] and reversal.get("shortfall", 0) == 0, reversal

    await refund(api, order, pi, 2500, charge_id=charge_id)
    account = await points_of(api, token)
    assert account["balance"] == 0, account
    assert sorted(e["delta"] for e in account["entries"] if e["order_id"] == order["id"]) == [-15, -10, 25], account

    def reversed_(rs, uid):
        return [e["data"] for _, e in of_type(rs, "points.reversed", user_id=uid)]

    found = await records(hub, "points", until=lambda rs: len(reversed_(rs, user_id)) >= 2)
    assert [(d["delta"], d["balance"], d["order_id"]) for d in reversed_(found, user_id)] == [
        (-10, 15, order["id"]), (-15, 0, order["id"])], reversed_(found, user_id)
    assert all(k == user_id for k, _ in of_type(found, "points.reversed", user_id=user_id))

    # A replay, an older total arriving late, the same total in another event: nothing more.
    await refund(api, order, pi, 1000, charge_id=charge_id)
    await refund(api, order, pi, 2500, charge_id=charge_id)
    assert (await points_of(api, token))["balance"] == 0

    # Points spent meanwhile: the reversal takes what is there and records the rest.
    token, user_id = await customer(api)
    order = await placed(api, token, product["id"], 2)
    pi, _ = await pay(api, token, order)
    r = await redeem(api, token, mall["id"], 4)
    assert r.status == 201 and r.data["balance"] == 5, r
    await refund(api, order, pi, 1000)
    account = await points_of(api, token)
    assert account["balance"] == 0, account
    await refund(api, order, pi, 2500)
    account = await points_of(api, token)
    assert account["balance"] == 0, account
    reversals = [e for e in account["entries"] if e["order_id"] == order["id"] and e["delta"] <= 0]
    assert reversals, account
    taken = -sum(e["delta"] for e in reversals)
    short = sum(e.get("shortfall", 0) for e in reversals)
    assert (taken, short) == (5, 20), account
    found = await records(hub, "points", until=lambda rs: reversed_(rs, user_id))
    assert all(d["balance"] >= 0 for d in reversed_(found, user_id)), found
    assert -sum(d["delta"] for d in reversed_(found, user_id)) == 5
    # What was bought with those points stays bought.
    [bought] = (await api.call("GET", MALL, token=token)).data["items"]
    assert (bought["quantity"], bought["points"], bought["status"]) == (4, 20, "completed"), bought


# 5. Late success after a refund ----------------------------------------------------------

async def test_a_success_arriving_after_the_full_refund_earns_nothing_again(api, hub_server):
    hub = hub_server.hub
    admin = await api.admin_token()
    token, user_id = await customer(api)
    product = await api.product(admin, price="12.50", stock=100)
    order = await placed(api, token, product["id"], 2)
    pi, first = await pay(api, token, order)
    await refund(api, order, pi, 2500)
    assert (await points_of(api, token))["balance"] == 0

    late = event("payment_intent.succeeded", succeeded_intent(amount=2500, order_id=order["id"], pi_id=pi))
    r = await webhook(api, late)
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    r = await webhook(api, first)
    assert r.status == 200 and r.data["duplicate"] is True, r
    account = await points_of(api, token)
    assert account["balance"] == 0, account
    assert sorted(e["delta"] for e in account["entries"]) == [-25, 25], account

    await settled(hub)
    found = await records(hub, "points")
    assert len(of_type(found, "points.awarded", user_id=user_id)) == 1, found


async def test_a_refund_delivered_before_its_success_still_takes_the_points_back(api, hub_server):
    """Stripe does not order webhooks. A refund for a payment not seen yet is refused with 503
    (not marked as handled), so Stripe delivers it again after the success."""
    admin = await api.admin_token()
    token, user_id = await customer(api)
    product = await api.product(admin, price="12.50", stock=100)
    order = await placed(api, token, product["id"], 2)
    pi = "pi_" + uuid.uuid4().hex[:24]
    early = event("charge.refunded", refunded_charge(amount=2500, amount_refunded=2500, payment_intent=pi,
                                                     order_id=order["id"]))
    r = await webhook(api, early)
    assert r.status == 503 and r.error_code == "retry_later" and r.headers["Retry-After"], r
    r = await webhook(api, event("payment_intent.succeeded", succeeded_intent(amount=2500, order_id=order["id"], pi_id=pi)))
    assert r.status == 200, r
    assert (await points_of(api, token))["balance"] == 25
    r = await webhook(api, early)  # Stripe's retry
    assert r.status == 200 and r.data["duplicate"] is False, r
    assert (await points_of(api, token))["balance"] == 0
    # A refund of a payment never seen, older than the wait, is acknowledged and dropped.
    stale = event("charge.refunded", refunded_charge(amount=100, amount_refunded=100, payment_intent="pi_never"))
    stale["created"] = int(time.time()) - 7200
    r = await webhook(api, stale)
    assert r.status == 200, r


# 6. The points mall ----------------------------------------------------------------------

async def test_the_points_mall(api, hub_server):
    hub = hub_server.hub
    admin = await api.admin_token()
    token, user_id = await customer(api)
    product = await api.product(admin, price="12.50", stock=100)
    mall = await api.product(admin, price="3.00", stock=10, points_price=5)
    assert mall["points_price"] == 5, mall
    plain = await api.product(admin, price="3.00", stock=10)
    assert plain["points_price"] is None, plain
    await pay(api, token, await placed(api, token, product["id"], 2))
    assert (await points_of(api, token))["balance"] == 25

    r = await api.call("POST", MALL, {"product_id": mall["id"], "quantity": 1})
    assert r.status == 401, r

    r = await redeem(api, token, mall["id"], 2)
    assert r.status == 201, r
    assert set(r.data) >= {"redemption", "balance"} and r.data["balance"] == 15, r.data
    done = r.data["redemption"]
    assert (done["product_id"], done["quantity"], done["points"], done["status"]) == (mall["id"], 2, 10, "completed")
    assert isinstance(done["id"], str) and done["id"], done
    assert await stock_of(api, mall["id"]) == 8

    # Short of points: 409, and the stock is as it was.
    r = await redeem(api, token, mall["id"], 4)
    assert r.status == 409 and r.error_code == "insufficient_points", r
    assert await stock_of(api, mall["id"]) == 8
    assert (await points_of(api, token))["balance"] == 15

    # Short of stock: 409, and the points are as they were.
    rich_token, rich_id = await customer(api)
    await hub.services.points._apply(rich_id, "awarded", 1000, "test credit", "test:rich")
    r = await redeem(api, rich_token, mall["id"], 9)
    assert r.status == 409 and r.error_code == "out_of_stock", r
    assert (await points_of(api, rich_token))["balance"] == 1000
    r = await redeem(api, token, mall["id"], 9)
    assert r.status == 409 and r.error_code in ("out_of_stock", "insufficient_points"), r
    assert (await points_of(api, token))["balance"] == 15
    assert await stock_of(api, mall["id"]) == 8

    # Not for points, unknown, malformed.
    r = await redeem(api, token, plain["id"], 1)
    assert r.status == 422 and r.error_code, r
    r = await redeem(api, token, "no-such-product", 1)
    assert r.status == 404 and r.error_code, r
    for case, body in {"zero": {"product_id": mall["id"], "quantity": 0},
                       "string": {"product_id": mall["id"], "quantity": "1"},
                       "negative": {"product_id": mall["id"], "quantity": -1},
                       "float": {"product_id": mall["id"], "quantity": 1.5},
                       "no product": {"quantity": 1}}.items():
        r = await api.call("POST", MALL, body, token=token)
        assert r.status == 422 and r.error_code, (case, r)
    r = await api.call("POST", MALL, body=b"{not json", token=token,
                       headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    assert await stock_of(api, mall["id"]) == 8
    assert (await points_of(api, token))["balance"] == 15
    assert await holds_of(hub, mall["id"]) == []

    # Only completed redemptions are listed; only the caller's.
    r = await api.call("GET", MALL, token=token)
    assert r.status == 200, r
    assert [(i["id"], i["status"], i["points"]) for i in r.data["items"]] == [(done["id"], "completed", 10)], r.data
    assert (await api.call("GET", MALL, token=rich_token)).data["items"] == []
    account = await points_of(api, token)
    [spent] = [e for e in account["entries"] if e["delta"] < 0]
    assert spent["delta"] == -10 and account["balance"] == 15, account

    await settled(hub)
    found = await records(hub, "points")
    [(key, redeemed)] = of_type(found, "points.redeemed")
    assert key == user_id and redeemed["subject"] == user_id, redeemed
    assert (redeemed["data"]["user_id"], redeemed["data"]["delta"], redeemed["data"]["balance"]) == (
        user_id, -10, 15), redeemed
    assert redeemed["data"]["reason"], redeemed


# 7. Concurrent redemptions ---------------------------------------------------------------

async def test_concurrent_redemptions_never_overspend_and_leave_no_stock_marker(api, hub_server, interleaved):
    hub = hub_server.hub
    admin = await api.admin_token()
    token, user_id = await customer(api)
    product = await api.product(admin, price="50.00", stock=10)
    mall = await api.product(admin, price="1.00", stock=1000, points_price=5)
    await pay(api, token, await placed(api, token, product["id"], 1))
    assert (await points_of(api, token))["balance"] == 50

    wide = Api(api.base_url)
    wide.client = AsyncHTTPClient(force_instance=True, max_clients=100)
    try:
        calls = interleaved["points.col"].calls
        results = await asyncio.gather(*(redeem(wide, token, mall["id"], 1) for _ in range(100)))
        assert interleaved["points.col"].calls - calls >= 200  # the wrapper really was in the way
    finally:
        wide.client.close()
    codes = [(r.status, r.error_code) for r in results]
    assert codes.count((201, None)) == 10, codes
    assert codes.count((409, "insufficient_points")) == 90, codes
    # Each answer's balance is the account as it stood when answering (others may have spent since).
    assert all(r.data["balance"] in range(0, 50, 5) for r in results if r.status == 201), results

    account = await points_of(api, token)
    assert account["balance"] == 0, account
    assert [e["delta"] for e in account["entries"] if e["delta"] < 0] == [-5] * 10, account
    assert await stock_of(api, mall["id"]) == 990
    assert await holds_of(hub, mall["id"]) == []
    listed = (await api.call("GET", MALL, token=token)).data["items"]
    assert len(listed) == 10 and {i["status"] for i in listed} == {"completed"}, listed
    assert await hub.stores.points.redemptions.count_documents({"user_id": user_id, "status": "pending"}) == 0

    def redeemed(rs):
        return [e["data"] for _, e in of_type(rs, "points.redeemed", user_id=user_id)]

    found = await records(hub, "points", until=lambda rs: len(redeemed(rs)) >= 10)
    assert sorted(d["balance"] for d in redeemed(found)) == list(range(0, 50, 5)), redeemed(found)


# 8. The sweep finishes interrupted redemptions ------------------------------------------

async def test_the_sweep_finishes_a_redemption_whose_process_died(api, hub_server):
    hub = hub_server.hub
    admin = await api.admin_token()
    token, user_id = await customer(api)
    mall = await api.product(admin, price="1.00", stock=10, points_price=5)
    pid = mall["id"]
    now = utcnow()
    past = now - timedelta(seconds=1)

    async def interrupted(rid: str) -> None:
        await hub.stores.points.insert_redemption({"_id": rid, "user_id": user_id, "product_id": pid, "quantity": 1,
                                                  "points": 5, "status": "pending",
                                                  "created_at": now - timedelta(seconds=60)})
        assert await hub.stores.products.take(pid, 1, f"{rid}:redeem", expires_at=past, now=now, order_id=None)

    async def status_of(rid: str) -> str:
        return (await hub.stores.points.redemption(rid))["status"]

    # Died before spending the points: the stock goes back, once.
    lost = uuid.uuid4().hex
    await interrupted(lost)
    assert await stock_of(api, pid) == 9
    await hub.services.orders.sweep()  # not the orders' marker: left alone
    assert await stock_of(api, pid) == 9 and [h["id"] for h in await holds_of(hub, pid)] == [f"{lost}:redeem"]
    await hub.services.points.sweep()
    assert await stock_of(api, pid) == 10
    assert await holds_of(hub, pid) == []
    assert await status_of(lost) == "failed"
    await hub.services.points.sweep()
    await hub.services.orders.sweep()
    assert await stock_of(api, pid) == 10

    # Died after spending the points: the stock stays taken, the redemption completes.
    await hub.services.points._apply(user_id, "awarded", 5, "test credit", "test:seed")
    spent = uuid.uuid4().hex
    await interrupted(spent)
    assert await hub.services.points._apply(user_id, "redeemed", -5, "redeemed", f"redeem:{spent}") == 0  # balance after
    assert await stock_of(api, pid) == 9
    await hub.services.orders.sweep()
    assert await stock_of(api, pid) == 9 and [h["id"] for h in await holds_of(hub, pid)] == [f"{spent}:redeem"]
    await hub.services.points.sweep()
    assert await stock_of(api, pid) == 9
    assert await holds_of(hub, pid) == []
    assert await status_of(spent) == "completed"
    await hub.services.points.sweep()
    assert await stock_of(api, pid) == 9
    listed = (await api.call("GET", MALL, token=token)).data["items"]
    assert [i["id"] for i in listed] == [spent], listed
    assert (await points_of(api, token))["balance"] == 0

    # A redemption still in progress (its marker not yet expired) is left to its process.
    live = uuid.uuid4().hex
    await hub.stores.points.insert_redemption({"_id": live, "user_id": user_id, "product_id": pid, "quantity": 1,
                                              "points": 5, "status": "pending", "created_at": now})
    assert await hub.stores.products.take(pid, 1, f"{live}:redeem", expires_at=now + timedelta(seconds=30), now=now,
                                        order_id=None)
    await hub.services.points.sweep()
    await hub.services.orders.sweep()
    assert await stock_of(api, pid) == 8 and [h["id"] for h in await holds_of(hub, pid)] == [f"{live}:redeem"]
    assert await status_of(live) == "pending"


# 9. points.* from other services ---------------------------------------------------------

async def test_points_awarded_by_another_service_are_credited_once_and_the_rest_is_dead_lettered(
        api, hub_server, topics):
    hub = hub_server.hub
    admin = await api.admin_token()
    token, user_id = await customer(api)
    product = await api.product(admin, price="12.50", stock=100)
    # The hub's own points.awarded goes on the same partition first: its consumer must skip it.
    await pay(api, token, await placed(api, token, product["id"], 2))
    assert (await points_of(api, token))["balance"] == 25

    bonus = external("points.awarded", {"user_id": user_id, "delta": 100, "reason": "welcome bonus"})
    await topics.send("points", bonus, key=user_id)
    account = await poll_balance(api, token, 125, timeout=20.0)
    assert account["balance"] == 125, account
    [credit] = [e for e in account["entries"] if e["delta"] == 100]
    assert credit["reason"] == "welcome bonus" and credit["order_id"] is None, credit
    assert credit["expires_at"], credit

    # The same event again, then another on the same partition: once the second has taken
    # effect the duplicate has been read, and must have changed nothing.
    await topics.send("points", bonus, key=user_id)
    await topics.send("points", external("points.awarded", {"user_id": user_id, "delta": 1}), key=user_id)
    account = await poll_balance(api, token, 126)
    assert account["balance"] == 126, account
    assert [e["delta"] for e in account["entries"]].count(100) == 1, account

    bad = {
        "negative": external("points.awarded", {"user_id": user_id, "delta": -5, "reason": "oops"}),
        "text": external("points.awarded", {"user_id": user_id, "delta": "abc"}),
        "zero": external("points.awarded", {"user_id": user_id, "delta": 0}),
        "bool": external("points.awarded", {"user_id": user_id, "delta": True}),
        "fraction": external("points.awarded", {"user_id": user_id, "delta": 2.5}),
        "no user": external("points.awarded", {"delta": 10}),
        "redeemed": external("points.redeemed", {"user_id": user_id, "delta": -10, "balance": 116, "reason": "x"}),
        # Only points.awarded is taken from other services, whatever the data looks like.
        "redeemed, credit-shaped": external("points.redeemed", {"user_id": user_id, "delta": 10, "reason": "x"}),
        "expired, credit-shaped": external("points.expired", {"user_id": user_id, "delta": 10, "reason": "x"}),
        "reversed": external("points.reversed", {"user_id": user_id, "delta": -10, "balance": 116, "reason": "x"}),
    }
    for e in bad.values():
        await topics.send("points", e, key=user_id)
    ids = {e["id"]: case for case, e in bad.items()}

    def lettered(rs):
        out = {}
        for _, record in rs:
            try:
                value = json.loads(record.get("value") or "")
            except (ValueError, TypeError):
                continue
            if isinstance(value, dict) and value.get("id") in ids:
                out[ids[value["id"]]] = record
        return out

    found = await records(hub, "dlq", until=lambda rs: len(lettered(rs)) == len(bad), timeout=20.0)
    dead = lettered(found)
    assert set(dead) == set(bad), (set(bad) - set(dead), found)
    for case, record in dead.items():
        assert isinstance(record.get("reason"), str) and record["reason"], (case, record)
    assert (await points_of(api, token))["balance"] == 126
