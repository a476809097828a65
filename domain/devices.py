"""A user's push targets: native devices (CONTRACT v2 §5; platforms, token formats, the
per-user cap) and the browser's web push subscriptions."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime

from domain.errors import Conflict, Invalid, NotFound

PLATFORMS = ("apns", "fcm")
ENVIRONMENTS = ("production", "sandbox")
MAX_DEVICES_PER_USER = 10  # a new one past this evicts the user's oldest
MAX_WEB_PUSH_SUBSCRIPTIONS = 10  # browsers per user; past this a new one is refused
# APNs device tokens are 32 bytes in hex today; Apple says they may grow (up to 100 bytes).
APNS_TOKEN_RE = re.compile(r"[0-9a-f]{64,200}")
# FCM registration tokens (and Firebase installation ids): about 160 URL-safe characters.
FCM_TOKEN_RE = re.compile(r"[A-Za-z0-9_:.-]{16,1024}")


def normalize_token(platform: str, token: str) -> str:
    """The token as stored and sent; ValueError when it is not one of the platform's."""
    if platform == "apns":
        token = token.strip().lower().replace(" ", "")
        if not APNS_TOKEN_RE.fullmatch(token):
            raise ValueError("an APNs device token is 64 to 200 hexadecimal characters")
        return token
    if not FCM_TOKEN_RE.fullmatch(token):  # fullmatch: `$` would let a final newline in
        raise ValueError("an FCM registration token is 16 to 1024 of A-Z a-z 0-9 _ : . -")
    return token


class Devices:
    def __init__(self, devices, users, *, clock: Callable[[], datetime],
                 endpoint_refusal: Callable[[str], Awaitable[str | None]], web_push: bool) -> None:
        self.devices = devices
        self.users = users
        self.clock = clock
        self.endpoint_refusal = endpoint_refusal  # why the outgoing policy refuses a push endpoint, or None
        self.web_push = web_push  # whether this hub sends web push (VAPID configured): else no subscriptions

    async def register(self, user_id: str, platform: str, token: str, fields: dict) -> tuple[dict, bool]:
        """(device, created): the same token again keeps its id; past MAX_DEVICES_PER_USER the
        user's oldest device is dropped."""
        return await self.devices.register(user_id, platform, token, fields, self.clock(), MAX_DEVICES_PER_USER)

    async def of_user(self, user_id: str) -> list[dict]:
        return await self.devices.of_user(user_id)

    async def remove(self, user_id: str, device_id: str) -> None:
        if not await self.devices.remove(user_id, device_id):
            raise NotFound("No such device.", code="device_not_found")

    async def subscribe_web_push(self, user_id: str, endpoint: str, keys: dict) -> dict:
        """Adds (or refreshes) a browser's subscription, keyed by endpoint; the subscription.
        Only an endpoint the hub may call: https in production, a listed push service, no
        private address (hub/adapters/outgoing.py)."""
        reason = await self.endpoint_refusal(endpoint)
        if reason is not None:
            raise Invalid("This push endpoint is not allowed on this hub.",
                          details=[{"field": "endpoint", "message": f"not allowed: {reason}"}])
        subscription = {"endpoint": endpoint, "keys": keys, "created_at": self.clock()}
        if not await self.users.add_push_subscription(user_id, subscription, MAX_WEB_PUSH_SUBSCRIPTIONS):
            raise Conflict(f"At most {MAX_WEB_PUSH_SUBSCRIPTIONS} devices per user; remove one first.",
                           code="too_many_subscriptions")
        return subscription

    async def unsubscribe_web_push(self, user_id: str, endpoint: str) -> None:
        await self.users.remove_push_subscriptions(user_id, [endpoint])

    async def web_push_subscriptions(self, user_id: str) -> list[dict]:
        user = await self.users.get(user_id)
        return (user or {}).get("push_subscriptions", [])
