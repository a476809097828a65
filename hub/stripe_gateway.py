"""Stripe over its real HTTP API (async, through the stripe library's aiohttp client).
STRIPE_API_BASE points it elsewhere, e.g. at a test double."""

from __future__ import annotations

import stripe

from domain.errors import DomainError


class PaymentProviderError(DomainError):
    status, code = 502, "payment_provider_error"


class StripeGateway:
    def __init__(self, api_key: str, api_base: str) -> None:
        self.http = stripe.AIOHTTPClient(timeout=15)
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
            raise PaymentProviderError(f"Stripe refused the payment intent: {exc.user_message or exc}") from None
        return {"id": intent.id, "client_secret": intent.client_secret}
