"""Payments: intents, provider events (Stripe webhooks, other services' payment events,
offline payments) and what they do to orders.

Every entry point ends in the same three idempotent steps, so a duplicate, a replay or a
retry after a crash has no second effect:
1. record the payment change, guarded by the causing event's id, with its `payment.*` event;
2. reconcile the order with the payment (confirm a pending order; give back a payment for
   a cancelled order; flag one that cannot apply: wrong amount, order already paid);
3. (refunds) a full refund of a delivered or returned order moves it to refunded.

A paid order that is cancelled, or paid after it was, gets its money back from here
(`refund_cancelled`): the provider is asked once per payment (Stripe: an idempotency key per
payment), and the refund comes back as a provider event through step 1 like any other, taking
back the points then.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from domain.callers import Caller
from domain.errors import Conflict, DomainError
from domain.events import Rejected, cloud_event
from domain.money import to_decimal_string, to_minor

log = logging.getLogger(__name__)

AMOUNT_MISMATCH, REFUND_REQUIRED = "amount_mismatch", "refund_required"


class PaymentsUnavailable(DomainError):
    code = "payments_unavailable"


class PaymentProviderError(DomainError):
    """The payment provider refused a call (the gateway raises it); details: its status and code."""
    code = "payment_provider_error"


class NotYet(DomainError):
    """The event refers to something that has not arrived yet: the sender should retry."""
    code = "retry_later"


# Stripe does not order its webhooks: a refund may come before the success it refunds.
# Refusing it makes Stripe retry; after this long we stop waiting for the success.
REFUND_WAIT_S = 3600
MAX_EXTERNAL_ID = 200  # order, provider and payment ids in another service's payment event
MAX_REASON = 200  # a failure reason from another service, as stored and shown
# StripeGateway.refund's outcomes: done (now or before), refused for good, or to be tried again later.
REFUNDED, REFUSED, RETRY = "refunded", "refused", "retry"
# A refund Stripe could not make is tried again after 1, 2, 4… minutes, at most hourly.
REFUND_RETRY_S, REFUND_RETRY_MAX_S = 60, 3600
# A refund set due (a cancel, a payment after one) is the sweep's this long after, should the
# process that set it die before asking the provider.
REFUND_GRACE = timedelta(seconds=30)


def payment_key(provider: str, payment_id: str) -> str:
    return f"{provider}:{payment_id}"


def public_payment(doc: dict) -> dict:
    return {
        "id": doc["_id"],
        "order_id": doc["order_id"],
        "provider": doc["provider"],
        "payment_id": doc["payment_id"],
        "amount": to_decimal_string(doc["amount_minor"]),
        "currency": doc["currency"],
        "status": doc["status"],
        "refunded": to_decimal_string(doc.get("refunded_minor", 0)),
        "flags": doc.get("flags", []),
        "failures": [{"reason": f["reason"], "at": f["at"].isoformat()} for f in doc.get("failures", [])],
        "created_at": doc["created_at"].isoformat(),
    }


class Payments:
    def __init__(self, store, orders, order_store, gateway, points, *, source: str,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.orders = orders  # domain.ordering.Orders: the status table and its events
        self.order_store = order_store
        self.gateway = gateway  # hub.adapters.stripe_gateway.StripeGateway, or None without STRIPE_API_KEY
        self.points = points  # domain.points.Points
        self.source = source
        self.clock = clock

    # Intents -------------------------------------------------------------------------
    async def payment_intent(self, order_id: str, caller: Caller) -> dict:
        order = await self.orders.visible(order_id, caller)
        if order["status"] != "pending":
            raise Conflict(f"A {order['status']} order cannot be paid.", code="order_not_payable")
        intent = order.get("payment_intent")
        if intent is None:
            if self.gateway is None:
                raise PaymentsUnavailable("Card payments are not configured (STRIPE_API_KEY).")
            # Our own idempotency key per order: a retry, or two racing requests, get one intent.
            intent = await self.gateway.create_payment_intent(
                amount_minor=order["total_minor"], currency=order["currency"], order_id=order["_id"],
                user_id=order["user_id"], idempotency_key=f"hub-order-{order['_id']}")
            intent = await self.order_store.set_payment_intent(order["_id"], intent)
        return {"payment_intent_id": intent["id"], "client_secret": intent["client_secret"],
                "amount": to_decimal_string(order["total_minor"]), "currency": order["currency"]}

    async def for_order(self, order_id: str, caller: Caller) -> list[dict]:
        await self.orders.visible(order_id, caller)
        return await self.store.for_order(order_id)

    # Stripe --------------------------------------------------------------------------
    async def stripe_event(self, event: dict) -> bool:
        """Apply a verified Stripe event; False if its id was handled before (a replay).
        The id is stored after the effects, which are idempotent: a crash in between
        means Stripe's retry redoes them harmlessly instead of losing them."""
        if await self.store.was_seen(event["id"]):
            return False
        obj = event["data"]["object"]
        kind = event["type"]
        amount = obj.get("amount_received") or obj.get("amount") or 0
        currency = str(obj.get("currency") or "").upper()
        if not isinstance(amount, int) or not isinstance(obj.get("id"), str):
            log.warning("Stripe event without usable amount or id ignored", extra={"event_id": event["id"], "type": kind})
        elif kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
            order_id = (obj.get("metadata") or {}).get("order_id")
            if kind == "payment_intent.succeeded":
                await self.succeeded(order_id, "stripe", obj["id"], amount, currency, event["id"])
            else:
                reason = (obj.get("last_payment_error") or {}).get("message") or "payment failed"
                await self.failed(order_id, "stripe", obj["id"], amount, currency, reason, event["id"])
        elif kind == "charge.refunded" and isinstance(obj.get("payment_intent"), str) \
                and isinstance(obj.get("amount_refunded"), int):
            key = payment_key("stripe", obj["payment_intent"])
            created = event.get("created") if isinstance(event.get("created"), int) else 0
            if await self.store.get(key) is None and self.clock().timestamp() - created < REFUND_WAIT_S:
                raise NotYet("This refund's payment has not arrived yet; retry later.", details={"retry_after": 60})
            await self.refunded_total(key, obj["amount_refunded"], event["id"])
        await self.store.mark_seen(event["id"], kind, self.clock())
        return True

    # Effects -------------------------------------------------------------------------
    def _event(self, kind: str, order: dict, provider: str, payment_id: str, amount_minor: int, currency: str,
               **extra) -> dict:
        data = {"order_id": order["_id"], "user_id": order["user_id"], "amount": to_decimal_string(amount_minor),
                "currency": currency, "provider": provider, "payment_id": payment_id, **extra}
        return cloud_event(f"payment.{kind}", self.source, data, subject=order["user_id"])

    def _base(self, order: dict, provider: str, payment_id: str, currency: str, now: datetime) -> dict:
        return {"order_id": order["_id"], "user_id": order["user_id"], "provider": provider, "payment_id": payment_id,
                "currency": currency, "refunded_minor": 0, "created_at": now}

    async def succeeded(self, order_id: str | None, provider: str, payment_id: str, amount_minor: int, currency: str,
                        event_id: str) -> dict | None:
        order = await self.order_store.get(order_id) if order_id else None
        if order is None:
            log.warning("payment for an unknown order ignored", extra={"order_id": order_id, "payment_id": payment_id})
            return None
        now = self.clock()
        key = payment_key(provider, payment_id)
        flags = [AMOUNT_MISMATCH] if (amount_minor, currency) != (order["total_minor"], order["currency"]) else []
        event = self._event("succeeded", order, provider, payment_id, amount_minor, currency)
        payment = await self.store.succeed(key, self._base(order, provider, payment_id, currency, now), amount_minor,
                                           flags, event_id, event, now) or await self.store.get(key)
        await self._reconcile(order, payment)
        return await self.store.get(key)

    async def _reconcile(self, order: dict, payment: dict) -> None:
        """Confirm the order a correct payment pays and award its points; give back one that
        came after the order was cancelled; flag one that cannot pay the order (a second
        payment). A replay after a crash finishes what was left."""
        if AMOUNT_MISMATCH in payment.get("flags", []):
            log.warning("payment amount does not match its order", extra={"payment": payment["_id"]})
            return
        if order["status"] == "pending":
            try:
                order = await self.orders.transition(order, "confirmed", note=f"paid ({payment['provider']})",
                                                     actor=payment["provider"], only_from=frozenset({"pending"}),
                                                     record={"paid_by": payment["_id"]})
            except Conflict:
                order = await self.order_store.get(order["_id"])  # moved meanwhile: judge again
        if order.get("paid_by") is None and order["status"] not in ("cancelled", "refunded") \
                and await self.order_store.claim_payment(order["_id"], payment["_id"]):
            order["paid_by"] = payment["_id"]  # an order an admin moved along before the money came
        if order.get("paid_by") == payment["_id"]:
            if order["status"] not in ("cancelled", "refunded"):  # a cancelled order earns nothing
                await self.points.award_for_order(order)
            return
        # Never resurrect a cancelled order: money that came after the cancel goes back, as a
        # paid order's does when it is cancelled (the sweep retries from the due time).
        claimed = await self.order_store.claim_for_refund(order["_id"], payment["_id"], self.clock() + REFUND_GRACE)
        if claimed is not None:
            log.info("payment for a cancelled order: refunding", extra={"payment": payment["_id"]})
            await self.refund_cancelled(claimed)
            return
        # A second payment for one order: money an operator gives back.
        await self.store.add_flag(payment["_id"], REFUND_REQUIRED)
        log.warning("payment needs a refund", extra={"payment": payment["_id"], "order_status": order["status"]})

    async def failed(self, order_id: str | None, provider: str, payment_id: str, amount_minor: int, currency: str,
                     reason: str, event_id: str) -> None:
        order = await self.order_store.get(order_id) if order_id else None
        if order is None:
            log.warning("payment failure for an unknown order ignored", extra={"order_id": order_id})
            return
        now = self.clock()
        event = self._event("failed", order, provider, payment_id, amount_minor, currency, reason=reason)
        await self.store.fail(payment_key(provider, payment_id), self._base(order, provider, payment_id, currency, now),
                              amount_minor, reason, event_id, event, now)

    async def refunded_total(self, key: str, refunded_total: int, event_id: str) -> None:
        """The provider says `refunded_total` has been refunded so far (Stripe's cumulative
        amount_refunded); publish only what is new, whatever the order of arrival."""
        while True:
            payment = await self.store.get(key)
            if payment is None:
                log.warning("refund for an unknown payment ignored", extra={"payment": key})
                return
            previous = payment.get("refunded_minor", 0)
            if refunded_total <= previous or event_id in payment.get("applied_events", []):
                return
            order = await self.order_store.get(payment["order_id"])
            event = self._event("refunded", order, payment["provider"], payment["payment_id"],
                                refunded_total - previous, payment["currency"],
                                refunded_total=to_decimal_string(refunded_total))
            if await self.store.refund_to(key, previous, refunded_total, event_id, event, self.clock()):
                break
        if order.get("paid_by") != key:
            return  # money given back for a payment that never paid the order: nothing else to undo
        await self.points.reverse_for_order(order, refunded_total, payment["amount_minor"])
        if refunded_total >= payment["amount_minor"]:
            await self._refund_order(order)

    async def _refund_order(self, order: dict) -> None:
        """A full refund ends a delivered or returned order as refunded. The table allows
        only returned → refunded, so a delivered order is first marked returned."""
        for source, target in (("delivered", "returned"), ("returned", "refunded")):
            if order["status"] == source:
                try:
                    order = await self.orders.transition(order, target, note="refunded in full", actor="payments",
                                                         only_from=frozenset({source}))
                except Conflict:
                    return

    async def refund_cancelled(self, order: dict) -> None:
        """Give back the money of `order`, a paid order just cancelled (its `refund_pending`
        marker set in the same move), then clear the marker. Stripe payments are refunded in
        full through the gateway, with a key per payment so that a retry never refunds twice;
        while Stripe cannot be reached the marker stays and the sweep calls this again after a
        wait that doubles each time (REFUND_RETRY_S, at most REFUND_RETRY_MAX_S). Money
        the hub cannot give back itself (Stripe refuses, payments are off, offline or another
        service's payment) is flagged `refund_required` for an operator. The points the order
        earned are taken back when the refund arrives (`refunded_total`), as for any refund."""
        payment = await self.store.get(order["paid_by"])
        left = payment["amount_minor"] - payment.get("refunded_minor", 0) if payment else 0
        if left > 0:
            context = {"payment": payment["_id"], "order_id": order["_id"], "amount_minor": left}
            if payment["provider"] != "stripe" or self.gateway is None:
                outcome = {"outcome": REFUSED, "reason": "not refundable by the hub"}
            else:
                outcome = await self.gateway.refund(payment_intent=payment["payment_id"], amount_minor=left,
                                                    idempotency_key=f"hub-refund-{payment['payment_id']}")
            if outcome["outcome"] == RETRY:
                attempts = order.get("refund_attempts", 0)
                wait = timedelta(seconds=min(REFUND_RETRY_S * 2 ** attempts, REFUND_RETRY_MAX_S))
                await self.order_store.retry_refund(order["_id"], self.clock() + wait)
                log.warning("refund of a cancelled order not made yet; the sweep retries",
                            extra={**context, **outcome, "attempts": attempts + 1, "retry_in_s": wait.total_seconds()})
                return
            if outcome["outcome"] == REFUSED:
                await self.store.add_flag(payment["_id"], REFUND_REQUIRED)
                log.error("refund of a cancelled order needs an operator", extra={**context, **outcome})
            else:
                log.info("refund of a cancelled order requested", extra={**context, **outcome})
        await self.order_store.finish_refund(order["_id"])

    async def offline(self, order_id: str, caller: Caller, amount_minor: int, reference: str | None) -> dict:
        """An admin records money taken elsewhere: the same effects as a card payment."""
        order = await self.orders.visible(order_id, caller)
        # Scoped to the order: a till reference may repeat across orders.
        payment_id = f"{order['_id']}:{reference}" if reference else order["_id"]
        return await self.succeeded(order["_id"], "offline", payment_id, amount_minor, order["currency"],
                                    f"offline:{payment_id}")

    # Other services ------------------------------------------------------------------
    async def apply_external(self, event: dict) -> None:
        """`payment.succeeded|failed|refunded` from another service: the same effects."""
        data = event["data"]
        kind = event["type"].removeprefix("payment.")
        if kind not in ("succeeded", "failed", "refunded"):
            raise Rejected(f"event type {event['type']} is not a payment outcome")
        try:
            order_id, provider, payment_id = (str(data[k]) for k in ("order_id", "provider", "payment_id"))
            if not all(1 <= len(v) <= MAX_EXTERNAL_ID for v in (order_id, provider, payment_id)):
                raise ValueError(f"order_id, provider and payment_id must be 1 to {MAX_EXTERNAL_ID} characters")
            amount_minor = to_minor(data["amount"])
            currency = str(data.get("currency", "")).upper()
            if len(currency) > 3:
                raise ValueError("currency must be an ISO 4217 code")
        except (KeyError, ValueError, ArithmeticError) as exc:  # decimal.Overflow is an ArithmeticError
            raise Rejected(f"invalid payment data: {exc}") from None
        if await self.order_store.get(order_id) is None:
            raise Rejected(f"unknown order {order_id}")
        if kind == "succeeded":
            await self.succeeded(order_id, provider, payment_id, amount_minor, currency, event["id"])
        elif kind == "failed":
            await self.failed(order_id, provider, payment_id, amount_minor, currency,
                              str(data.get("reason") or "payment failed")[:MAX_REASON], event["id"])
        else:
            key = payment_key(provider, payment_id)
            payment = await self.store.get(key)
            if payment is None:
                raise Rejected(f"refund for unknown payment {key}")
            await self.refunded_total(key, payment.get("refunded_minor", 0) + amount_minor, event["id"])
