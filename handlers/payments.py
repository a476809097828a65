"""Payment endpoints: payment intents, the Stripe webhook, and an order's payments."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import stripe
from pydantic import Field

from domain.payments import public_payment
from handlers.base import ApiError, BaseHandler
from handlers.schemas import Body, Price

STRIPE_TOLERANCE_S = 300


class OfflinePaymentBody(Body):
    amount: Price
    method: Literal["offline"]
    reference: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class PaymentIntentHandler(BaseHandler):
    openapi = {"post": {"summary": "Create (or return the existing) Stripe PaymentIntent for a pending order", "auth": "user"}}

    async def post(self, order_id: str) -> None:
        caller = self.require_user()
        self.send(await self.services.payments.payment_intent(order_id, caller))


class OrderPaymentsHandler(BaseHandler):
    openapi = {
        "get": {"summary": "An order's payments (owner or admin)", "auth": "user"},
        "post": {"summary": "Record a payment taken outside Stripe (admin)", "body": OfflinePaymentBody,
                 "status": 201, "auth": "admin"},
    }

    async def get(self, order_id: str) -> None:
        caller = self.caller or self.require_user()
        self.send({"items": [public_payment(p) for p in await self.services.payments.for_order(order_id, caller)]})

    async def post(self, order_id: str) -> None:
        caller = self.require_admin()
        body = self.parse(OfflinePaymentBody)
        payment = await self.services.payments.offline(order_id, caller, body.amount, body.reference)
        self.send(public_payment(payment), 201)


class StripeWebhookHandler(BaseHandler):
    openapi = {"post": {"summary": "Stripe events, verified by Stripe-Signature on the raw body", "auth": None}}

    async def post(self) -> None:
        secret = self.config.stripe_webhook_secret
        if not secret:
            raise ApiError(503, "payments_unavailable", "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET).")
        payload = self.body()
        # The signature is checked on the raw bytes before anything is parsed or stored.
        try:
            stripe.WebhookSignature.verify_header(payload.decode("utf-8"), self.request.headers.get("Stripe-Signature"),
                                                  secret, STRIPE_TOLERANCE_S)
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise ApiError(400, "invalid_signature", f"The webhook could not be verified: {exc}.") from None
        if not (isinstance(event, dict) and isinstance(event.get("id"), str) and isinstance(event.get("type"), str)
                and isinstance(event.get("data"), dict) and isinstance(event["data"].get("object"), dict)):
            raise ApiError(400, "invalid_event", "The webhook is not a Stripe event.")
        applied = await self.services.payments.stripe_event(event)
        self.send({"received": True, "duplicate": not applied})
