"""Stripe over its real HTTP API (async, through the stripe library's httpx client, on a
client under the outgoing policy: hub/adapters/outgoing.py). STRIPE_API_BASE points it elsewhere,
e.g. at a test double."""

from __future__ import annotations

import logging
import re

import anyio
import stripe

from domain.payments import REFUNDED, REFUSED, RETRY, PaymentProviderError
from hub.adapters.outgoing import OutgoingPolicy

log = logging.getLogger(__name__)
STRIPE_CODE_RE = re.compile(r"^[a-z0-9_]{1,64}$")  # Stripe's error codes, e.g. card_declined


class _PolicyHTTPXClient(stripe.HTTPXClient):
    """stripe's httpx client on our httpx client: the policy's timeouts, answer cap and
    addresses instead of its own 80 s timeout and unbounded reads."""

    def __init__(self, policy: OutgoingPolicy, api_base: str) -> None:
        # HTTPXClient.__init__ would build an httpx client (and a TLS context) only for us to
        # replace it: skip to its base and set what it would have set.
        super(stripe.HTTPXClient, self).__init__()
        self.anyio = anyio
        self._client_async = policy.client(base_url=api_base)
        self._client = None  # no sync calls
        self._timeout = None  # None: the client's own (the policy's) timeouts apply


class StripeGateway:
    def __init__(self, api_key: str, api_base: str, policy: OutgoingPolicy) -> None:
        self.http = _PolicyHTTPXClient(policy, api_base)
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=self.http,
            max_network_retries=2,  # safe: every call carries an idempotency key
        )

    async def close(self) -> None:
        await self.http.close_async()

    async def create_payment_intent(self, *, amount_minor: int, currency: str, order_id: str, user_id: str,
                                    idempotency_key: str) -> dict:
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params={
                    "amount": amount_minor,
                    "currency": currency.lower(),
                    "metadata": {"order_id": order_id, "user_id": user_id},
                    "automatic_payment_methods": {"enabled": True},
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            # Stripe's own words stay in our logs: the caller gets a status and Stripe's error code.
            code = exc.code if isinstance(exc.code, str) and STRIPE_CODE_RE.match(exc.code) else None
            log.warning("Stripe refused a payment intent", extra={
                "order_id": order_id, "provider_status": exc.http_status, "provider_code": code,
                "provider_message": str(exc.user_message or exc)[:300]})
            raise PaymentProviderError("The payment provider refused the payment intent.",
                                       details={"provider_status": exc.http_status, "provider_code": code}) from None
        return {"id": intent.id, "client_secret": intent.client_secret}

    async def refund(self, *, payment_intent: str, amount_minor: int, idempotency_key: str) -> dict:
        """Refund `amount_minor` of a payment intent (`POST /v1/refunds`). Stripe's answer as
        {"outcome": REFUNDED | REFUSED | RETRY, ...} (domain/payments.py), never an exception:
        the caller keeps its marker on RETRY (no answer, a 5xx, 409, 429, or a key Stripe does
        not take, which an operator can fix) and flags the payment on REFUSED."""
        try:
            refund = await self.client.v1.refunds.create_async(
                params={"payment_intent": payment_intent, "amount": amount_minor},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            code = exc.code if isinstance(exc.code, str) and STRIPE_CODE_RE.match(exc.code) else None
            if code == "charge_already_refunded":  # refunded before (the key expires after 24 h at Stripe)
                return {"outcome": REFUNDED, "refund_id": None}
            status = exc.http_status
            retry = status is None or status in (401, 403, 409, 429) or status >= 500
            return {"outcome": RETRY if retry else REFUSED, "provider_status": status, "provider_code": code,
                    "provider_message": str(exc.user_message or exc)[:300]}
        return {"outcome": REFUNDED, "refund_id": refund.id}
