"""Points at checkout over real HTTP (CONTRACT v2 §5): spent through the ledger, bounded by
the balance and the total, combined with a coupon so that subtotal, discount, points and
the amount Stripe is asked for add up to the cent; given back exactly once on cancel (also
racing the payment), on refund and when the placement fails; bad input refused with
nothing changed. Against a Stripe-shaped server (tests/stripe_fake.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest

from domain.checkout import Checkout
from tests.checkout_helpers import (O, POINTS, balance, cents, coupon, coupon_of, give_points, order,
                                    stock)
from tests.conftest import interleave
from tests.stripe_fake import StripeFake, event, refunded_charge, sign, succeeded_intent

pytestmark = [pytest.mark.timeout(120), pytest.mark.stores]

STRIPE_KEY = "sk_test_points"
WHSEC = "whsec_checkout"


@pytest.fixture
async def stripe():
    fake = StripeFake(api_key=STRIPE_KEY)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def hub_env(hub_env, stripe):
    hub_env.update({"STRIPE_API_KEY": STRIPE_KEY, "STRIPE_WEBHOOK_SECRET": WHSEC, "STRIPE_API_BASE": stripe.base_url,
                    "HUB_SWEEP_INTERVAL_S": "3600"})
    return hub_env


async def webhook(api, payload: dict):
    import json

    body = json.dumps(payload).encode()
    return await api.call("POST", "/api/v1/webhooks/stripe", body=body,
                          headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, WHSEC)})


async def customer(api, points: int = 0):
    session = await api.register()
    token, user_id = session["access_token"], session["user"]["id"]
    if points:
        await give_points(api, user_id, token, points)
    return token, user_id


async def entries(api, token: str) -> list[dict]:
    return (await api.call("GET", POINTS, token=token)).data["entries"]


def test_points_value_rounding_for_any_rate():
    """value = min(payable, points × 100 // rate) minor units; only the points that value
    needs are taken, so none is lost to rounding."""
    def at(rate):
        return Checkout(None, None, None, source="/t", points_per_currency_unit=rate, clock=datetime.now)
    assert at(100).points_value(1234, 10_000) == (1234, 1234)  # 100 points = 1.00: a point is a cent
    assert at(100).points_value(5000, 1999) == (1999, 1999)  # bounded by what is left to pay
    assert at(1000).points_value(15, 10_000) == (10, 1)  # 10 points a cent: the 5 left over stay
    assert at(30).points_value(10, 10_000) == (10, 33)  # 30 points = 1.00: 10 buy 33 cents (9.9 points' worth)
    assert at(30).points_value(100, 10) == (3, 10)  # 10 cents need 3 points
    assert at(1).points_value(7, 500) == (5, 500)
    assert at(100).points_value(0, 500) == (0, 0)


async def test_coupon_points_and_the_stripe_amount_add_up_to_the_cent(api, stripe):
    admin = await api.admin_token()
    token, user_id = await customer(api, points=5000)
    kettle = await api.product(admin, price="19.99", stock=10)
    c = await coupon(api, admin, code=f"P{uuid.uuid4().hex[:8]}", kind="percent", value="12.5")
    r = await order(api, token, (kettle["id"], 3), coupon_code=c["code"], points=1234)
    assert r.status == 201, r
    placed = r.data
    assert (placed["subtotal"], placed["discount"], placed["points_used"], placed["points_value"], placed["total"]) \
        == ("59.97", "7.49", 1234, "12.34", "40.14")
    assert await balance(api, token) == 5000 - 1234
    [spent] = [e for e in await entries(api, token) if e["order_id"] == placed["id"]]
    assert (spent["delta"], spent["reason"]) == (-1234, "order_checkout")

    intent = await api.call("POST", f"{O}/{placed['id']}/payment-intent", token=token)
    assert intent.status == 200 and intent.data["amount"] == "40.14", intent
    [created] = stripe.created()
    assert created.form["amount"] == "4014"
    # Paying that amount confirms the order and earns points on what was paid.
    paid = await webhook(api, event("payment_intent.succeeded", succeeded_intent(
        amount=4014, order_id=placed["id"], pi_id=intent.data["payment_intent_id"])))
    assert paid.status == 200, paid
    got = (await api.call("GET", f"{O}/{placed['id']}", token=token)).data
    assert got["status"] == "confirmed", got
    assert await balance(api, token) == 5000 - 1234 + 40


async def test_points_beyond_the_total_are_not_taken_and_a_fully_covered_order_needs_no_payment(api, stripe):
    admin = await api.admin_token()
    token, _ = await customer(api, points=3000)
    product = await api.product(admin, price="12.00", stock=10)
    r = await order(api, token, (product["id"], 1), points=3000)
    assert r.status == 201, r
    assert (r.data["points_used"], r.data["points_value"], r.data["total"]) == (1200, "12.00", "0.00"), r
    assert r.data["status"] == "confirmed", r  # nothing left to pay
    assert await balance(api, token) == 1800
    assert not stripe.created()
    intent = await api.call("POST", f"{O}/{r.data['id']}/payment-intent", token=token)
    assert intent.status == 409 and intent.error_code == "order_not_payable", intent


async def test_bad_or_unaffordable_points_are_refused_and_change_nothing(api):
    admin = await api.admin_token()
    token, _ = await customer(api, points=100)
    product = await api.product(admin, price="10.00", stock=5)
    for points in (-1, 10**12, "50", 1.5, True, None):
        r = await order(api, token, (product["id"], 1), points=points)
        if points is None:
            assert r.status == 201, r  # null: no points
            await api.call("POST", f"{O}/{r.data['id']}/cancel", token=token)
            continue
        assert r.status == 422 and r.error_code == "validation_failed", (points, r)
    r = await order(api, token, (product["id"], 1), points=101)
    assert r.status == 409 and r.error_code == "insufficient_points", r
    assert r.data["error"]["details"] == {"required": 101, "balance": 100}
    assert await stock(api, product["id"]) == 5 and await balance(api, token) == 100
    assert (await order(api, token, points=5)).status == 422  # neither items nor from_cart
    assert (await order(api, token, (product["id"], 1), from_cart=True)).status == 422  # both


async def test_racing_orders_never_spend_more_points_than_the_balance(api, hub_server, monkeypatch):
    interleave(hub_server.hub, monkeypatch)
    admin = await api.admin_token()
    token, _ = await customer(api, points=1000)
    product = await api.product(admin, price="5.00", stock=100)
    results = await asyncio.gather(*(order(api, token, (product["id"], 1), points=300) for _ in range(6)))
    assert sorted(r.status for r in results) == [201] * 3 + [409] * 3, results
    assert await balance(api, token) == 100
    assert await stock(api, product["id"]) == 97


async def test_cancel_gives_points_and_coupon_back_once(api, hub_server, monkeypatch):
    interleave(hub_server.hub, monkeypatch)
    admin = await api.admin_token()
    token, _ = await customer(api, points=500)
    product = await api.product(admin, price="10.00", stock=10)
    c = await coupon(api, admin, code=f"P{uuid.uuid4().hex[:8]}", kind="amount", value="1.00")
    placed = (await order(api, token, (product["id"], 2), coupon_code=c["code"], points=400)).data
    assert (placed["total"], await balance(api, token)) == ("15.00", 100)
    results = await asyncio.gather(*(api.call("POST", f"{O}/{placed['id']}/cancel", token=t)
                                     for t in (token, admin, token, admin)))
    assert sorted(r.status for r in results) == [200, 409, 409, 409], results
    await asyncio.gather(hub_server.hub.services.checkout.sweep(), hub_server.hub.services.orders.sweep())
    assert await balance(api, token) == 500
    returned = [e for e in await entries(api, token) if e["id"] == f"return:{placed['id']}"]
    assert [e["delta"] for e in returned] == [400]
    assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 0
    assert await stock(api, product["id"]) == 10


async def test_a_cancel_racing_the_payment_gives_back_only_if_it_won(api, hub_server, monkeypatch, stripe):
    interleave(hub_server.hub, monkeypatch)
    admin = await api.admin_token()
    product = await api.product(admin, price="10.00", stock=100)
    c = await coupon(api, admin, code=f"R{uuid.uuid4().hex[:8]}", kind="amount", value="1.00", per_user_limit=20)
    outcomes = set()
    for _ in range(4):
        token, _ = await customer(api, points=200)
        placed = (await order(api, token, (product["id"], 1), coupon_code=c["code"], points=200)).data
        before = (await coupon_of(api, admin, c["code"]))["redemptions"]
        cancel, pay = await asyncio.gather(
            api.call("POST", f"{O}/{placed['id']}/cancel", token=token),
            webhook(api, event("payment_intent.succeeded", succeeded_intent(
                amount=cents(placed["total"]), order_id=placed["id"], pi_id=f"pi_{uuid.uuid4().hex[:20]}"))))
        assert pay.status == 200, pay
        await hub_server.hub.services.checkout.sweep()
        got = (await api.call("GET", f"{O}/{placed['id']}", token=token)).data
        outcomes.add(got["status"])
        after = (await coupon_of(api, admin, c["code"]))["redemptions"]
        if got["status"] == "cancelled":
            assert cancel.status == 200
            # The owner may cancel a confirmed order too: what the payment earned stays (its
            # refund is the payment's business); the 200 spent come back once.
            earned = 7 if "confirmed" in [h["status"] for h in got["status_history"]] else 0
            assert (await balance(api, token), after) == (200 + earned, before - 1)
        else:
            assert got["status"] == "confirmed" and cancel.status in (200, 409)
            assert (await balance(api, token), after) == (7, before)  # the 7.00 paid earns 7; the 200 stay spent
    assert outcomes <= {"cancelled", "confirmed"}


async def test_a_full_refund_gives_points_and_coupon_back_once(api, hub_server, stripe):
    admin = await api.admin_token()
    token, _ = await customer(api, points=300)
    product = await api.product(admin, price="10.00", stock=10)
    c = await coupon(api, admin, code=f"F{uuid.uuid4().hex[:8]}", kind="amount", value="2.00")
    placed = (await order(api, token, (product["id"], 1), coupon_code=c["code"], points=300)).data
    assert placed["total"] == "5.00"
    pi = f"pi_{uuid.uuid4().hex[:20]}"
    assert (await webhook(api, event("payment_intent.succeeded", succeeded_intent(
        amount=500, order_id=placed["id"], pi_id=pi)))).status == 200
    assert await balance(api, token) == 5  # 5.00 paid earns 5 points
    for status in ("processing", "shipped", "delivered"):
        assert (await api.call("POST", f"{O}/{placed['id']}/transitions", {"status": status}, token=admin)).status == 200
    refund = event("charge.refunded", refunded_charge(amount=500, amount_refunded=500, payment_intent=pi,
                                                      order_id=placed["id"]))
    for _ in range(2):  # Stripe redelivers
        assert (await webhook(api, refund)).status == 200
    await hub_server.hub.services.checkout.sweep()
    got = (await api.call("GET", f"{O}/{placed['id']}", token=token)).data
    assert got["status"] == "refunded", got
    assert await balance(api, token) == 300  # the 300 spent come back; the 5 earned are taken back
    assert (await coupon_of(api, admin, c["code"]))["redemptions"] == 0
