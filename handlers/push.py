"""Web Push: the VAPID public key browsers subscribe with, and the caller's subscriptions."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from handlers.base import ApiError, BaseHandler
from handlers.schemas import Body

Base64Url = Annotated[str, Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    return value


class PushKeys(Body):
    p256dh: Base64Url
    auth: Annotated[str, Field(min_length=16, max_length=32, pattern=r"^[A-Za-z0-9_-]+={0,2}$")]


class SubscriptionBody(Body):
    endpoint: Annotated[str, Field(min_length=8, max_length=1024, json_schema_extra={
        "pattern": r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?(:[0-9]{1,5})?(/[!-~]*)?$"}),
        AfterValidator(_endpoint)]
    keys: PushKeys


class EndpointBody(Body):
    endpoint: Annotated[str, Field(min_length=1, max_length=1024)]


def _require_web_push(handler: BaseHandler) -> None:
    if not handler.services.devices.web_push:
        raise ApiError(503, "push_unavailable", "Web push is not configured on this hub.")


class VapidKeyHandler(BaseHandler):
    openapi = {"get": {"summary": "The VAPID public key (applicationServerKey) for PushManager.subscribe", "auth": None}}

    async def get(self) -> None:
        _require_web_push(self)
        self.send({"key": self.config.vapid_public_key})


class PushSubscriptionsHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Register this device's push subscription (the browser's PushSubscription JSON)",
                 "body": SubscriptionBody, "status": 201, "auth": "user"},
        "delete": {"summary": "Forget a push subscription by endpoint", "body": EndpointBody, "status": 204,
                   "auth": "user"},
        "get": {"summary": "The caller's push subscriptions (endpoints only)", "auth": "user"},
    }

    async def post(self) -> None:
        caller = self.require_user()
        body = self.parse(SubscriptionBody)
        _require_web_push(self)
        subscription = await self.services.devices.subscribe_web_push(caller.id, body.endpoint, body.keys.model_dump())
        self.send({"endpoint": body.endpoint, "created_at": subscription["created_at"].isoformat()}, 201)

    async def delete(self) -> None:
        caller = self.require_user()
        body = self.parse(EndpointBody)
        await self.services.devices.unsubscribe_web_push(caller.id, body.endpoint)
        self.set_status(204)
        self.finish()

    async def get(self) -> None:
        caller = self.require_user()
        self.send({"items": [{"endpoint": s["endpoint"], "created_at": s["created_at"].isoformat()}
                             for s in await self.services.devices.web_push_subscriptions(caller.id)]})
