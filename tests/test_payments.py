"""Payments over real HTTP (CONTRACT §2 "Payments and points", §3): Stripe payment intents
against a Stripe-shaped server (tests/stripe_fake.py), signed Stripe webhooks, offline
payments, and payment events from other services on the `payments` topic.

Every hub start costs a few seconds, so related cases share one hub."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from config.settings import load_settings
from hub.wiring.server import HubServer
from domain.clock import utcnow
from tests.checkout_helpers import POINTS, balance
from tests.conftest import Api, get_order, placed
from tests.stripe_fake import (
    StripeFake, event, failed_intent, refunded_charge, sign, succeeded_intent,
)

pytestmark = [pytest.mark.stores]

STRIPE_KEY = "sk_test_123"
WHSEC = "whsec_test"
O = "/api/v1/orders"
WEBHOOK = "/api/v1/webhooks/stripe"
PAYMENT_FIELDS = {"id", "order_id", "provider", "payment_id", "amount", "currency", "status", "refunded", "flags",
                  "failures"}


@pytest.fixture
async def stripe():
    fake = StripeFake(api_key=STRIPE_KEY)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def hub_env(hub_env, stripe):
    hub_env.update({
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WHSEC,
        "STRIPE_API_BASE": stripe.base_url,
        "HUB_SWEEP_INTERVAL_S": "3600",  # no unpaid-order sweep during a test
    })
    return hub_env


# Helpers ---------------------------------------------------------------------------------

async def setup(api, price: str = "12.50"):
    """An admin token, a customer session and one product."""
    admin = await api.admin_token()
    user = await api.register()
    return admin, user, await api.product(admin, price=price, stock=100)


def statuses(order: dict) -> list[str]:
    return [h["status"] for h in order["status_history"]]


async def poll_order(api, token: str, order_id: str, predicate, timeout: float = 10.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        order = await get_order(api, token, order_id)
        if predicate(order) or loop.time() >= deadline:
            return order
        await asyncio.sleep(0.1)


async def payments_of(api, token: str, order_id: str) -> list[dict]:
    r = await api.call("GET", f"{O}/{order_id}/payments", token=token)
    assert r.status == 200, r
    assert set(r.data) >= {"items"}, r.data
    for item in r.data["items"]:
        assert set(item) >= PAYMENT_FIELDS, item
    return r.data["items"]


async def deliver(api, admin: str, order_id: str) -> None:
    for status in ("processing", "shipped", "delivered"):
        r = await api.call("POST", f"{O}/{order_id}/transitions", {"status": status}, token=admin)
        assert r.status == 200 and r.data["status"] == status, (status, r)


async def webhook(api, payload: dict | bytes, *, secret: str = WHSEC, timestamp: int | None = None,
                  signature: str | None = None, sign_payload: bytes | None = None):
    """POST a Stripe webhook: `payload` (an event, or raw bytes) signed with `secret` at
    `timestamp`, or with the literal `signature` header (None header when signature == "")."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
    if signature is None:
        headers["Stripe-Signature"] = sign(sign_payload if sign_payload is not None else body, secret, timestamp)
    elif signature != "":
        headers["Stripe-Signature"] = signature
    return await api.call("POST", WEBHOOK, body=body, headers=headers)


def of_type(events: list[dict], event_type: str, **data) -> list[dict]:
    return [e for e in events if e.get("type") == event_type
            and all(e.get("data", {}).get(k) == v for k, v in data.items())]


async def intent_for(api, token: str, order_id: str) -> dict:
    r = await api.call("POST", f"{O}/{order_id}/payment-intent", token=token)
    assert r.status == 200, r
    return r.data


async def paid(api, token: str, order: dict) -> str:
    """Pay `order` through a payment intent and a signed payment_intent.succeeded; its pi id."""
    pi = (await intent_for(api, token, order["id"]))["payment_intent_id"]
    cents = int(Decimal(order["total"]) * 100)
    r = await webhook(api, event("payment_intent.succeeded",
                                 succeeded_intent(amount=cents, order_id=order["id"], pi_id=pi)))
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert (await get_order(api, token, order["id"]))["status"] == "confirmed"
    return pi


def cloud_event(event_type: str, data: dict, *, source: str, event_id: str | None = None,
                subject: str | None = None) -> dict:
    e = {"specversion": "1.0", "id": event_id or uuid.uuid4().hex, "source": source, "type": event_type,
         "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
         "datacontenttype": "application/json", "data": data}
    if subject:
        e["subject"] = subject
    return e


# The fake itself (checked against the stripe library, so the helpers are right) ----------

async def test_stripe_fake_speaks_stripe(stripe):
    import stripe as stripe_lib

    client = AsyncHTTPClient()

    async def create(key: str | None, idem: str | None, body: str):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if idem:
            headers["Idempotency-Key"] = idem
        r = await client.fetch(HTTPRequest(stripe.base_url + "/v1/payment_intents", method="POST", body=body,
                                           headers=headers), raise_error=False)
        return r.code, json.loads(r.body)

    body = "amount=1250&currency=usd&metadata[order_id]=o1&metadata[user_id]=u1"
    for key in (None, "sk_test_wrong"):
        code, data = await create(key, "k1", body)
        assert code == 401 and data["error"]["type"] == "invalid_request_error" and data["error"]["message"], data
    code, first = await create(STRIPE_KEY, "k1", body)
    assert code == 200, first
    assert first["id"].startswith("pi_") and first["client_secret"].startswith(first["id"] + "_secret_")
    assert (first["object"], first["amount"], first["currency"], first["status"], first["livemode"]) == (
        "payment_intent", 1250, "usd", "requires_payment_method", False)
    assert first["metadata"] == {"order_id": "o1", "user_id": "u1"} and isinstance(first["created"], int)
    assert await create(STRIPE_KEY, "k1", body) == (200, first)
    code, other = await create(STRIPE_KEY, "k2", body)
    assert code == 200 and other["id"] != first["id"]
    code, data = await create(STRIPE_KEY, "k1", body.replace("1250", "1251"))
    assert code == 400 and data["error"]["type"] == "idempotency_error"
    code, data = await create(STRIPE_KEY, None, "amount=12.50&currency=usd")
    assert code == 400 and data["error"]["param"] == "amount"
    assert len(stripe.intents) == 2
    recorded = stripe.created()[0]
    assert (recorded.method, recorded.path, recorded.idempotency_key) == ("POST", "/v1/payment_intents", "k1")
    assert recorded.headers["Authorization"] == f"Bearer {STRIPE_KEY}" and recorded.metadata["order_id"] == "o1"
    assert recorded.form["amount"] == "1250"

    payload = json.dumps(event("payment_intent.succeeded", succeeded_intent(amount=1250, order_id="o1"))).encode()
    stripe_lib.WebhookSignature.verify_header(payload.decode(), sign(payload, WHSEC), WHSEC, 300)
    for header in (sign(payload, "whsec_other"), sign(payload, WHSEC, int(time.time()) - 301)):
        with pytest.raises(stripe_lib.SignatureVerificationError):
            stripe_lib.WebhookSignature.verify_header(payload.decode(), header, WHSEC, 300)
    charge = refunded_charge(amount=1250, amount_refunded=500, payment_intent="pi_x", order_id="o1")
    assert (charge["object"], charge["refunded"], charge["metadata"]) == ("charge", False, {"order_id": "o1"})
    declined = failed_intent(amount=1250, order_id="o1")["last_payment_error"]
    assert (declined["message"], declined["code"]) == ("Your card was declined.", "card_declined")


# Payment intents ---------------------------------------------------------------------------

async def test_payment_intent_is_created_once_per_order_at_stripe(api, stripe):
    admin, user, product = await setup(api, price="5.55")
    token = user["access_token"]
    order = await placed(api, token, product["id"], 3)
    assert order["total"] == "16.65"  # int(16.65 * 100) is 1664 with floats

    # Stripe is down (the hub may retry); the customer tries again once it is back, several
    # times at once: one intent, and every request for this order carried the same key.
    stripe.outage(500)
    r = await api.call("POST", f"{O}/{order['id']}/payment-intent", token=token)
    assert (r.status, r.error_code) == (502, "payment_provider_error"), r
    assert r.data["error"]["details"] == {"provider_status": 500, "provider_code": None}, r
    assert stripe.requests and not stripe.created()
    stripe.outage(None)
    first, *again = await asyncio.gather(*(intent_for(api, token, order["id"]) for _ in range(3)))
    assert all(a == first for a in again), again
    assert len(stripe.intents) == 1, stripe.intents
    [created] = {r.response["id"]: r for r in stripe.created()}.values()
    intent = stripe.intents[created.response["id"]]
    assert first["payment_intent_id"] == intent["id"] and first["client_secret"] == intent["client_secret"]
    assert (first["amount"], first["currency"]) == ("16.65", "USD")
    assert created.headers["Authorization"] == f"Bearer {STRIPE_KEY}"
    assert created.form["amount"] == "1665"
    assert created.form["currency"] == "usd"
    assert created.metadata.get("order_id") == order["id"]
    key = created.idempotency_key
    assert key, created.headers

    # Again: the same intent; Stripe only ever saw this order's key.
    again = [await intent_for(api, token, order["id"]) for _ in range(2)]
    assert all(a == first for a in again), again
    assert len(stripe.intents) == 1
    assert {r.idempotency_key for r in stripe.requests} == {key}

    # Another order: another key, another intent.
    other = await placed(api, token, product["id"], 1)
    second = await intent_for(api, token, other["id"])
    assert second["payment_intent_id"] != first["payment_intent_id"] and second["amount"] == "5.55"
    keys = {r.idempotency_key for r in stripe.created()}
    assert len(keys) == 2 and key in keys
    seen = len(stripe.requests)

    # Refusals reach nobody at Stripe.
    stranger = (await api.register())["access_token"]
    r = await api.call("POST", f"{O}/{order['id']}/payment-intent", token=stranger)
    assert r.status == 404, r
    r = await api.call("POST", f"{O}/no-such-order/payment-intent", token=token)
    assert r.status == 404, r
    r = await api.call("POST", f"{O}/{order['id']}/payment-intent")
    assert r.status == 401, r
    cancelled = await placed(api, token, product["id"], 1)
    assert (await api.call("POST", f"{O}/{cancelled['id']}/cancel", {}, token=token)).status == 200
    r = await api.call("POST", f"{O}/{cancelled['id']}/payment-intent", token=token)
    assert r.status == 409 and r.error_code == "order_not_payable", r
    # An order that was paid meanwhile is no longer payable either.
    r = await webhook(api, event("payment_intent.succeeded",
                                 succeeded_intent(amount=1665, order_id=order["id"], pi_id=first["payment_intent_id"])))
    assert r.status == 200, r
    r = await api.call("POST", f"{O}/{order['id']}/payment-intent", token=token)
    assert r.status == 409 and r.error_code == "order_not_payable", r
    assert len(stripe.requests) == seen


async def test_without_a_stripe_key_card_payments_are_unavailable(hub_env, stripe):
    hub_env.pop("STRIPE_API_KEY")
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        admin, user, product = await setup(api)
        order = await placed(api, user["access_token"], product["id"])
        r = await api.call("POST", f"{O}/{order['id']}/payment-intent", token=user["access_token"])
        assert r.status == 503 and r.error_code == "payments_unavailable", r
        assert stripe.requests == []
        # Offline payments need no Stripe.
        r = await api.call("POST", f"{O}/{order['id']}/payments", {"amount": "12.50", "method": "offline"},
                           token=admin)
        assert r.status == 201, r
        assert (await get_order(api, user["access_token"], order["id"]))["status"] == "confirmed"
        # Cancelled, that money cannot go back through Stripe: flagged for an operator.
        r = await api.call("POST", f"{O}/{order['id']}/cancel", {}, token=user["access_token"])
        assert r.status == 200 and r.data["status"] == "cancelled", r
        [payment] = await payments_of(api, admin, order["id"])
        assert payment["flags"] == ["refund_required"] and payment["refunded"] == "0.00", payment
        assert stripe.requests == []
    finally:
        await server.stop()


# Webhooks ----------------------------------------------------------------------------------

async def test_webhook_signature_is_checked_before_anything_else(api, topics):
    admin, user, product = await setup(api)
    token = user["access_token"]
    order = await placed(api, token, product["id"])
    good = event("payment_intent.succeeded", succeeded_intent(amount=1250, order_id=order["id"]))
    body = json.dumps(good).encode()
    now = int(time.time())
    forged_body = json.dumps({**good, "data": {"object": {**good["data"]["object"], "amount_received": 1}}}).encode()
    bad = {
        "no header": dict(signature=""),
        "empty header": dict(signature=" "),
        "garbage header": dict(signature="not-a-signature"),
        "no v1": dict(signature=sign(body, WHSEC).replace("v1=", "v0=")),
        "wrong secret": dict(secret="whsec_forged"),
        "unprefixed secret": dict(secret=WHSEC.removeprefix("whsec_")),
        "stale timestamp": dict(timestamp=now - 310),
        "timestamp not signed": dict(signature=sign(body, WHSEC, now - 1000).replace(f"t={now - 1000}", f"t={now}")),
        "body changed after signing": dict(sign_payload=forged_body),
    }
    for case, kwargs in bad.items():
        r = await webhook(api, body, **kwargs)
        assert r.status == 400 and r.error_code == "invalid_signature", (case, r)
    for case, raw, code in (("not json", b"{not json", "invalid_signature"), ("not utf-8", b"\xff\xfe{}", "invalid_signature"),
                            ("not an event", b'{"id": "evt_1"}', "invalid_event"), ("a list", b"[]", "invalid_event")):
        r = await webhook(api, raw)  # correctly signed
        assert r.status == 400 and r.error_code == code, (case, r)

    order_now = await get_order(api, token, order["id"])
    assert order_now["status"] == "pending" and statuses(order_now) == ["pending"]
    assert await payments_of(api, token, order["id"]) == []
    await topics.settled()
    assert not of_type(await topics.read("payments"), "payment.succeeded", order_id=order["id"])

    # None of them marked the event as seen: signed properly (within the 300 s tolerance) it applies.
    r = await webhook(api, body, timestamp=now - 200)
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert (await get_order(api, token, order["id"]))["status"] == "confirmed"

    # Stripe may send several v1 signatures (while a secret is rolled): any one valid is enough.
    other = await placed(api, token, product["id"])
    event2 = json.dumps(event("payment_intent.succeeded",
                              succeeded_intent(amount=1250, order_id=other["id"]))).encode()
    real = sign(event2, WHSEC)
    t, v1 = real.split(",")
    r = await webhook(api, event2, signature=f"{t},v1={'0' * 64},{v1},v0=abc")
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert (await get_order(api, token, other["id"]))["status"] == "confirmed"


async def test_payment_succeeded_confirms_the_order_once_and_is_published(api, topics):
    admin, user, product = await setup(api)
    token, user_id = user["access_token"], user["user"]["id"]
    order = await placed(api, token, product["id"])
    pi = (await intent_for(api, token, order["id"]))["payment_intent_id"]
    evt = event("payment_intent.succeeded", succeeded_intent(amount=1250, order_id=order["id"], pi_id=pi))

    r = await webhook(api, evt)
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    confirmed = await get_order(api, token, order["id"])
    assert confirmed["status"] == "confirmed" and statuses(confirmed) == ["pending", "confirmed"]

    payments = await topics.read("payments", until=lambda es: of_type(es, "payment.succeeded", order_id=order["id"]))
    [published] = of_type(payments, "payment.succeeded", order_id=order["id"])
    assert published["specversion"] == "1.0" and published["source"] == "/hub" and published["id"]
    assert published["subject"] == user_id
    data = published["data"]
    assert (data["order_id"], data["user_id"], data["amount"], data["currency"], data["provider"],
            data["payment_id"]) == (order["id"], user_id, "12.50", "USD", "stripe", pi), data
    orders = await topics.read("orders", until=lambda es: of_type(es, "order.confirmed", order_id=order["id"]))
    [order_confirmed] = of_type(orders, "order.confirmed", order_id=order["id"])
    assert order_confirmed["data"]["status"] == "confirmed" and order_confirmed["source"] == "/hub"

    # Stripe delivers the same event again (a retry, re-signed later; or the very same request).
    r = await webhook(api, evt, timestamp=int(time.time()) + 1)
    assert r.status == 200 and r.data == {"received": True, "duplicate": True}, r
    r = await webhook(api, json.dumps(evt).encode())
    assert r.status == 200 and r.data == {"received": True, "duplicate": True}, r

    await topics.settled()  # a wrongful second effect would be published by now
    assert statuses(await get_order(api, token, order["id"])) == ["pending", "confirmed"]
    payments = await topics.read("payments")
    assert len(of_type(payments, "payment.succeeded", order_id=order["id"])) == 1, payments
    orders = await topics.read("orders")
    assert len(of_type(orders, "order.confirmed", order_id=order["id"])) == 1
    dlq = await topics.read("dlq")
    assert not [d for d in dlq if order["id"] in json.dumps(d)], dlq  # the hub's own event is not "impossible"

    [payment] = await payments_of(api, token, order["id"])
    assert (payment["order_id"], payment["provider"], payment["payment_id"], payment["amount"], payment["currency"],
            payment["status"], payment["flags"], payment["failures"]) == (
        order["id"], "stripe", pi, "12.50", "USD", "succeeded", [], []), payment
    assert isinstance(payment["refunded"], str) and Decimal(payment["refunded"]) == 0, payment
    assert isinstance(payment["id"], str) and payment["id"]
    admin_view = await payments_of(api, admin, order["id"])
    assert admin_view == [payment]
    stranger = (await api.register())["access_token"]
    assert (await api.call("GET", f"{O}/{order['id']}/payments", token=stranger)).status == 404
    assert (await api.call("GET", f"{O}/{order['id']}/payments")).status == 401
    assert (await api.call("GET", f"{O}/no-such-order/payments", token=admin)).status == 404


async def test_successes_that_cannot_confirm_an_order_are_recorded_and_flagged_or_given_back(api, topics, stripe):
    admin, user, product = await setup(api)
    token = user["access_token"]

    # Paid one cent short: recorded, flagged, the order waits.
    short = await placed(api, token, product["id"])
    pi_short = (await intent_for(api, token, short["id"]))["payment_intent_id"]
    r = await webhook(api, event("payment_intent.succeeded", succeeded_intent(
        amount=1250, amount_received=1249, order_id=short["id"], pi_id=pi_short)))
    assert r.status == 200 and r.data["received"] is True, r
    after = await get_order(api, token, short["id"])
    assert after["status"] == "pending" and statuses(after) == ["pending"]
    [payment] = await payments_of(api, token, short["id"])
    assert payment["payment_id"] == pi_short and "amount_mismatch" in payment["flags"], payment

    # Paid after the order was cancelled (a payment timeout, a customer who changed their mind
    # while the card was charged): the order stays cancelled and the hub gives the money back.
    gone = await placed(api, token, product["id"])
    pi_gone = (await intent_for(api, token, gone["id"]))["payment_intent_id"]
    assert (await api.call("POST", f"{O}/{gone['id']}/cancel", {"reason": "changed my mind"}, token=token)).status == 200
    assert refund_requests(stripe) == []  # nothing paid yet
    late = event("payment_intent.succeeded", succeeded_intent(amount=1250, order_id=gone["id"], pi_id=pi_gone))
    r = await webhook(api, late)
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    after = await get_order(api, token, gone["id"])
    assert after["status"] == "cancelled" and statuses(after) == ["pending", "cancelled"]
    [request] = refund_requests(stripe)
    assert (request.form, request.idempotency_key) == ({"payment_intent": pi_gone, "amount": "1250"},
                                                       f"hub-refund-{pi_gone}")
    [payment] = await payments_of(api, token, gone["id"])
    assert (payment["payment_id"], payment["status"], payment["flags"]) == (pi_gone, "succeeded", []), payment
    assert await balance(api, token) == 0  # a cancelled order earns nothing
    # The same payment told again (another event, as after a crash): nothing more is refunded, nothing earned.
    r = await webhook(api, event("payment_intent.succeeded",
                                 succeeded_intent(amount=1250, order_id=gone["id"], pi_id=pi_gone)))
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert len(refund_requests(stripe)) == 1 and len(stripe.refunds) == 1
    assert await balance(api, token) == 0

    # A payment for no order of ours, and one without metadata: acknowledged, nothing changes.
    ghost = succeeded_intent(amount=1250, order_id=f"no-such-order-{uuid.uuid4().hex[:6]}")
    anonymous = succeeded_intent(amount=1250)
    for obj in (ghost, anonymous):
        r = await webhook(api, event("payment_intent.succeeded", obj))
        assert r.status == 200 and r.data == {"received": True, "duplicate": False}, (obj["metadata"], r)

    payments = await topics.read("payments", until=lambda es: of_type(es, "payment.succeeded", order_id=gone["id"]))
    assert len(of_type(payments, "payment.succeeded", order_id=gone["id"], payment_id=pi_gone)) == 1, payments
    await topics.settled()
    payments = await topics.read("payments")
    strays = [e for e in payments if e.get("data", {}).get("payment_id") in (ghost["id"], anonymous["id"])]
    assert strays == []
    orders = await topics.read("orders")
    assert not of_type(orders, "order.confirmed", order_id=short["id"])
    assert not of_type(orders, "order.confirmed", order_id=gone["id"])
    assert (await get_order(api, token, short["id"]))["status"] == "pending"


async def test_a_declined_card_is_recorded_and_a_later_success_still_confirms(api, topics):
    admin, user, product = await setup(api)
    token, user_id = user["access_token"], user["user"]["id"]
    order = await placed(api, token, product["id"])
    pi = (await intent_for(api, token, order["id"]))["payment_intent_id"]

    r = await webhook(api, event("payment_intent.payment_failed",
                                 failed_intent(amount=1250, order_id=order["id"], pi_id=pi)))
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    after = await get_order(api, token, order["id"])
    assert after["status"] == "pending" and statuses(after) == ["pending"]
    payments = await topics.read("payments", until=lambda es: of_type(es, "payment.failed", order_id=order["id"]))
    [failed] = of_type(payments, "payment.failed", order_id=order["id"])
    assert failed["source"] == "/hub" and failed["subject"] == user_id
    assert failed["data"]["reason"] == "Your card was declined.", failed
    assert (failed["data"]["user_id"], failed["data"]["provider"], failed["data"]["payment_id"],
            failed["data"]["currency"]) == (user_id, "stripe", pi, "USD")
    [payment] = await payments_of(api, token, order["id"])
    assert payment["payment_id"] == pi and payment["status"] != "succeeded", payment
    assert len(payment["failures"]) == 1 and "Your card was declined." in json.dumps(payment["failures"]), payment

    # The customer tries another card on the same intent.
    r = await webhook(api, event("payment_intent.succeeded", succeeded_intent(amount=1250, order_id=order["id"],
                                                                              pi_id=pi)))
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    after = await get_order(api, token, order["id"])
    assert after["status"] == "confirmed" and statuses(after) == ["pending", "confirmed"]
    [payment] = await payments_of(api, token, order["id"])
    assert payment["status"] == "succeeded" and len(payment["failures"]) == 1, payment
    payments = await topics.read("payments", until=lambda es: of_type(es, "payment.succeeded", order_id=order["id"]))
    assert len(of_type(payments, "payment.failed", order_id=order["id"])) == 1
    assert len(of_type(payments, "payment.succeeded", order_id=order["id"])) == 1


async def test_refunds_publish_what_is_new_and_a_full_refund_ends_a_delivered_order(api, topics):
    admin, user, product = await setup(api)
    token = user["access_token"]

    # In one go.
    whole = await placed(api, token, product["id"])
    pi_whole = await paid(api, token, whole)
    await deliver(api, admin, whole["id"])
    r = await webhook(api, event("charge.refunded", refunded_charge(amount=1250, amount_refunded=1250,
                                                                    payment_intent=pi_whole, order_id=whole["id"])))
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    payments = await topics.read("payments", until=lambda es: of_type(es, "payment.refunded", order_id=whole["id"]))
    [refund] = of_type(payments, "payment.refunded", order_id=whole["id"])
    assert (refund["data"]["amount"], refund["data"]["currency"], refund["data"]["provider"],
            refund["data"]["payment_id"]) == ("12.50", "USD", "stripe", pi_whole), refund
    after = await get_order(api, token, whole["id"])
    assert after["status"] == "refunded"
    assert statuses(after) == ["pending", "confirmed", "processing", "shipped", "delivered", "returned", "refunded"]

    # Bit by bit: Stripe's amount_refunded is the running total.
    parts = await placed(api, token, product["id"])
    pi_parts = await paid(api, token, parts)
    await deliver(api, admin, parts["id"])
    charge_id = "ch_" + uuid.uuid4().hex[:24]

    def charge(cumulative: int) -> dict:
        return refunded_charge(amount=1250, amount_refunded=cumulative, payment_intent=pi_parts, order_id=parts["id"],
                               charge_id=charge_id)

    def refunds(events):
        return [e["data"]["amount"] for e in of_type(events, "payment.refunded", order_id=parts["id"])]

    r = await webhook(api, event("charge.refunded", charge(500)))
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert refunds(await topics.read("payments", until=refunds)) == ["5.00"]
    assert (await get_order(api, token, parts["id"]))["status"] == "delivered"
    [payment] = await payments_of(api, token, parts["id"])
    assert Decimal(payment["refunded"]) == Decimal("5.00"), payment

    rest = event("charge.refunded", charge(1250))
    r = await webhook(api, rest)
    assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert refunds(await topics.read("payments", until=lambda es: len(refunds(es)) >= 2)) == ["5.00", "7.50"]
    after = await get_order(api, token, parts["id"])
    assert statuses(after)[-2:] == ["returned", "refunded"] and after["status"] == "refunded", after

    # The same event again; an older total arriving late; the same total in another event: nothing new.
    r = await webhook(api, rest)
    assert r.status == 200 and r.data == {"received": True, "duplicate": True}, r
    for cumulative in (500, 1250):
        r = await webhook(api, event("charge.refunded", charge(cumulative)))
        assert r.status == 200 and r.data["duplicate"] is False, r
    await topics.settled()
    assert refunds(await topics.read("payments")) == ["5.00", "7.50"]
    assert statuses(await get_order(api, token, parts["id"])).count("refunded") == 1
    [payment] = await payments_of(api, token, parts["id"])
    assert Decimal(payment["refunded"]) == Decimal("12.50"), payment


async def test_two_success_events_racing_for_one_order_confirm_it_once(api, topics, interleaved):
    admin, user, product = await setup(api)
    token = user["access_token"]
    orders = [await placed(api, token, product["id"]) for _ in range(4)]
    pis = {}
    for order in orders:
        pis[order["id"]] = pi = (await intent_for(api, token, order["id"]))["payment_intent_id"]
        obj = succeeded_intent(amount=1250, order_id=order["id"], pi_id=pi)
        results = await asyncio.gather(*(webhook(api, event("payment_intent.succeeded", obj)) for _ in range(2)))
        assert [r.status for r in results] == [200, 200], results

    def succeeded(events):
        return [e for e in events if e.get("type") == "payment.succeeded"]

    await topics.read("payments", until=lambda es: len(succeeded(es)) >= len(orders))
    await topics.settled()
    events = await topics.read("payments")
    order_events = await topics.read("orders")
    for order in orders:
        after = await get_order(api, token, order["id"])
        assert after["status"] == "confirmed" and statuses(after).count("confirmed") == 1, after
        assert len(of_type(events, "payment.succeeded", order_id=order["id"])) == 1, order["id"]
        assert len(of_type(order_events, "order.confirmed", order_id=order["id"])) == 1, order["id"]
        [payment] = await payments_of(api, token, order["id"])
        assert payment["payment_id"] == pis[order["id"]] and payment["flags"] == [], payment


# Offline payments --------------------------------------------------------------------------

async def test_an_admin_records_an_offline_payment_once(api, topics):
    admin, user, product = await setup(api)
    token, user_id = user["access_token"], user["user"]["id"]
    order = await placed(api, token, product["id"])
    path = f"{O}/{order['id']}/payments"
    body = {"amount": "12.50", "method": "offline", "reference": "till-42"}

    r = await api.call("POST", path, body, token=token)
    assert r.status == 403, r
    for case, bad in {"card": {**body, "method": "card"}, "stripe": {**body, "method": "stripe"},
                      "no method": {"amount": "12.50"}, "no amount": {"method": "offline"},
                      "bad amount": {**body, "amount": "twelve"}}.items():
        r = await api.call("POST", path, bad, token=admin)
        assert r.status == 422, (case, r)
    assert (await get_order(api, token, order["id"]))["status"] == "pending"
    assert await payments_of(api, admin, order["id"]) == []

    r = await api.call("POST", path, body, token=admin)
    assert r.status == 201, r
    payment = r.data
    assert set(payment) >= PAYMENT_FIELDS, payment
    assert (payment["order_id"], payment["provider"], payment["amount"], payment["currency"], payment["status"]) == (
        order["id"], "offline", "12.50", "USD", "succeeded"), payment
    after = await get_order(api, token, order["id"])
    assert after["status"] == "confirmed" and statuses(after) == ["pending", "confirmed"]

    r = await api.call("POST", path, body, token=admin)
    assert r.status in (200, 201) and r.data["id"] == payment["id"], r
    listed = await payments_of(api, token, order["id"])
    assert [p["id"] for p in listed] == [payment["id"]]

    events = await topics.read("payments", until=lambda es: of_type(es, "payment.succeeded", order_id=order["id"]))
    await topics.settled()
    events = await topics.read("payments")
    [published] = of_type(events, "payment.succeeded", order_id=order["id"])
    assert (published["data"]["provider"], published["data"]["amount"], published["data"]["currency"],
            published["data"]["user_id"]) == ("offline", "12.50", "USD", user_id), published
    assert statuses(await get_order(api, token, order["id"])) == ["pending", "confirmed"]
    r = await api.call("POST", f"{O}/no-such-order/payments", body, token=admin)
    assert r.status == 404, r

    # A reference belongs to its order: the same till number on another order never hands
    # back (or counts as) the first order's payment.
    other = await placed(api, token, product["id"])
    r = await api.call("POST", f"{O}/{other['id']}/payments", body, token=admin)
    assert r.status in (201, 409, 422), r
    if r.status == 201:
        assert r.data["order_id"] == other["id"] and r.data["id"] != payment["id"], r
    other_now = await get_order(api, token, other["id"])
    other_payments = await payments_of(api, admin, other["id"])
    if other_now["status"] == "confirmed":
        assert [p["order_id"] for p in other_payments] == [other["id"]], other_payments
    assert [p["id"] for p in await payments_of(api, admin, order["id"])] == [payment["id"]]


# Other services ----------------------------------------------------------------------------

async def test_payment_succeeded_from_another_service_confirms_the_order_once(api, topics):
    admin, user, product = await setup(api)
    token, user_id = user["access_token"], user["user"]["id"]
    order = await placed(api, token, product["id"])
    later = await placed(api, token, product["id"])

    def succeeded(order_id: str, payment_id: str) -> dict:
        return cloud_event("payment.succeeded", {"order_id": order_id, "user_id": user_id, "amount": "12.50",
                                                 "currency": "USD", "provider": "adyen", "payment_id": payment_id},
                           source="/payments-service", subject=user_id)

    external = succeeded(order["id"], "psp_1")
    await topics.send("payments", external, key=order["id"])
    after = await poll_order(api, token, order["id"], lambda o: o["status"] == "confirmed")
    assert after["status"] == "confirmed" and statuses(after) == ["pending", "confirmed"], after

    # The same event again, then another one on the same partition: once the second has
    # taken effect, the duplicate has been read (and must have changed nothing).
    await topics.send("payments", external, key=order["id"])
    await topics.send("payments", succeeded(later["id"], "psp_2"), key=order["id"])
    assert (await poll_order(api, token, later["id"], lambda o: o["status"] == "confirmed"))["status"] == "confirmed"
    await topics.settled()
    assert statuses(await get_order(api, token, order["id"])) == ["pending", "confirmed"]
    [payment] = await payments_of(api, token, order["id"])
    assert (payment["provider"], payment["payment_id"], payment["amount"], payment["currency"], payment["status"]) == (
        "adyen", "psp_1", "12.50", "USD", "succeeded"), payment
    orders = await topics.read("orders")
    assert len(of_type(orders, "order.confirmed", order_id=order["id"])) == 1
    payments = await topics.read("payments")
    ours = [e for e in of_type(payments, "payment.succeeded", order_id=order["id"]) if e["source"] == "/hub"]
    assert len(ours) <= 1, ours


# Cancelling a paid order (an extension of CONTRACT §2: docs/payments.md) ----------------------

def refund_requests(stripe) -> list:
    return [r for r in stripe.requests if (r.method, r.path) == ("POST", "/v1/refunds")]


async def earned(api, token: str, order_id: str) -> list[tuple[int, str]]:
    """(delta, reason) of the ledger entries of `order_id` in the customer's points."""
    r = await api.call("GET", POINTS, token=token)
    assert r.status == 200, r
    return sorted((e["delta"], e["reason"]) for e in r.data["entries"] if e["order_id"] == order_id)


async def test_cancelling_a_paid_order_refunds_it_once_and_the_refund_takes_the_points_back(api, stripe, topics):
    admin, user, product = await setup(api)
    token = user["access_token"]
    unpaid = await placed(api, token, product["id"])
    r = await api.call("POST", f"{O}/{unpaid['id']}/cancel", {}, token=token)
    assert r.status == 200 and r.data["status"] == "cancelled", r
    assert refund_requests(stripe) == []  # nothing was paid

    order = await placed(api, token, product["id"])
    pi = await paid(api, token, order)
    assert await earned(api, token, order["id"]) == [(12, "order_paid")]
    r = await api.call("POST", f"{O}/{order['id']}/cancel", {"reason": "changed my mind"}, token=token)
    assert r.status == 200 and r.data["status"] == "cancelled", r
    [request] = refund_requests(stripe)
    assert (request.form, request.idempotency_key) == ({"payment_intent": pi, "amount": "1250"}, f"hub-refund-{pi}")
    [refund] = stripe.refunds
    assert (refund["payment_intent"], refund["amount"], request.status) == (pi, 1250, 200)
    [payment] = await payments_of(api, token, order["id"])
    assert payment["flags"] == [] and payment["refunded"] == "0.00", payment  # until Stripe says it is done
    assert await balance(api, token) == 12

    # Stripe's webhook for that refund (sent twice, as Stripe may): the points go, once; the order stays cancelled.
    for _ in range(2):
        r = await webhook(api, event("charge.refunded", refunded_charge(amount=1250, amount_refunded=1250,
                                                                        payment_intent=pi, order_id=order["id"])))
        assert r.status == 200 and r.data == {"received": True, "duplicate": False}, r
    assert await earned(api, token, order["id"]) == [(-12, "order_refunded"), (12, "order_paid")]
    assert await balance(api, token) == 0
    after = await get_order(api, token, order["id"])
    assert after["status"] == "cancelled" and statuses(after) == ["pending", "confirmed", "cancelled"], after
    [payment] = await payments_of(api, token, order["id"])
    assert payment["refunded"] == "12.50" and payment["flags"] == [], payment
    await topics.settled()
    assert len(of_type(await topics.read("payments"), "payment.refunded", order_id=order["id"])) == 1
    assert len(refund_requests(stripe)) == 1

    # Stripe refuses the refund of an order an admin cancels while processing: flagged for an operator.
    refused = await placed(api, token, product["id"])
    await paid(api, token, refused)
    assert (await api.call("POST", f"{O}/{refused['id']}/transitions", {"status": "processing"}, token=admin)).status == 200
    stripe.fail_next(400, {"type": "invalid_request_error", "code": "charge_disputed",
                           "message": "This charge is disputed."})
    r = await api.call("POST", f"{O}/{refused['id']}/cancel", {}, token=admin)
    assert r.status == 200 and r.data["status"] == "cancelled", r
    [payment] = await payments_of(api, token, refused["id"])
    assert payment["flags"] == ["refund_required"] and payment["refunded"] == "0.00", payment
    assert len(stripe.refunds) == 1 and len(refund_requests(stripe)) == 2
    assert await balance(api, token) == 12  # no refund, no reversal: the operator's refund will take them


async def test_a_refund_stripe_could_not_make_is_made_once_by_the_sweep_of_any_process(
        api, hub_server, hub_env, stripe, monkeypatch):
    admin, user, product = await setup(api)
    token = user["access_token"]
    order = await placed(api, token, product["id"])
    pi = await paid(api, token, order)
    stripe.outage(500)
    r = await api.call("POST", f"{O}/{order['id']}/cancel", {}, token=token)
    assert r.status == 200 and r.data["status"] == "cancelled", r  # the cancel holds; the refund waits
    tried = refund_requests(stripe)
    assert tried and stripe.refunds == []
    stripe.outage(None)

    # A second process on the same store; both sweep at once, past the grace left to the cancelling process.
    second = HubServer(load_settings(hub_env), mongo_client=hub_server.hub.mongo_client)
    await second.start()
    try:
        hubs = [hub_server.hub, second.hub]
        for hub in hubs:
            monkeypatch.setattr(hub.services.orders, "clock", lambda: utcnow() + timedelta(minutes=5))
        await asyncio.gather(*(hub.services.orders.sweep() for hub in hubs))
        [refund] = stripe.refunds
        assert (refund["payment_intent"], refund["amount"]) == (pi, 1250)
        assert {r.idempotency_key for r in refund_requests(stripe)} == {f"hub-refund-{pi}"}

        # A process that died after Stripe refunded, before it cleared its marker: the retry
        # reaches Stripe with the same key and refunds nothing more.
        await hub_server.hub.stores.orders.set_fields(order["id"], {"refund_pending": True})
        asked = len(refund_requests(stripe))
        await second.hub.services.orders.sweep()
        assert len(refund_requests(stripe)) == asked + 1 and len(stripe.refunds) == 1
        await asyncio.gather(*(hub.services.orders.sweep() for hub in hubs))
        assert len(refund_requests(stripe)) == asked + 1  # settled: no more calls
    finally:
        await second.stop()
    [payment] = await payments_of(api, token, order["id"])
    assert payment["flags"] == [], payment
    assert (await get_order(api, token, order["id"]))["status"] == "cancelled"



async def test_a_refund_stripe_cannot_make_is_tried_again_after_a_wait_that_doubles(api, hub_server, stripe,
                                                                                     monkeypatch):
    admin, user, product = await setup(api)
    token = user["access_token"]
    order = await placed(api, token, product["id"])
    await paid(api, token, order)
    stripe.outage(500)
    start = utcnow()
    services = hub_server.hub.services

    def at(seconds: float) -> None:
        for service in (services.orders, services.payments):
            monkeypatch.setattr(service, "clock", lambda: start + timedelta(seconds=seconds))

    at(0)
    r = await api.call("POST", f"{O}/{order['id']}/cancel", {}, token=token)
    assert r.status == 200 and r.data["status"] == "cancelled", r
    assert refund_requests(stripe) and stripe.refunds == []

    async def sweep_at(seconds: float) -> int:
        """Sweeps at `seconds` after the cancel; the refund requests Stripe got from it."""
        at(seconds)
        before = len(refund_requests(stripe))
        await services.orders.sweep()
        return len(refund_requests(stripe)) - before

    assert await sweep_at(50) == 0  # the first wait is a minute
    assert await sweep_at(61) > 0  # due: tried, refused again; the next wait is two minutes
    assert await sweep_at(170) == 0
    assert await sweep_at(182) > 0  # and then four
    assert await sweep_at(400) == 0
    stripe.outage(None)
    assert await sweep_at(423) > 0
    assert len(stripe.refunds) == 1
    assert await sweep_at(4000) == 0  # settled


async def test_a_payment_racing_the_cancel_of_an_order_confirmed_before_the_money_is_given_back(
        api, stripe, interleaved):
    """An admin confirmed the orders before the money came; the payment then claims each one
    while its owner cancels it: whichever wins, the money goes back, once."""
    admin, user, product = await setup(api)
    token = user["access_token"]
    for _ in range(6):
        order = await placed(api, token, product["id"])
        pi = (await intent_for(api, token, order["id"]))["payment_intent_id"]
        r = await api.call("POST", f"{O}/{order['id']}/transitions", {"status": "confirmed"}, token=admin)
        assert r.status == 200, r
        cancel, paying = await asyncio.gather(
            api.call("POST", f"{O}/{order['id']}/cancel", {}, token=token),
            webhook(api, event("payment_intent.succeeded", succeeded_intent(amount=1250, order_id=order["id"],
                                                                            pi_id=pi))))
        assert (cancel.status, paying.status) == (200, 200), (cancel, paying)
        [payment] = await payments_of(api, token, order["id"])
        refunded = [r for r in stripe.refunds if r["payment_intent"] == pi]
        assert (payment["flags"], len(refunded)) == ([], 1), (payment, refunded)
