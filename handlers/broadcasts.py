"""Broadcasts (CONTRACT v2 §5): one request to a topic, a list of users or everyone; each
recipient gets an ordinary notification by their own rules (domain/broadcasts.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt

from domain.broadcasts import public_broadcast
from domain.notification_policy import CATEGORIES, CHANNELS, PRIORITIES
from domain.notification_rules import MAX_EXPIRES_AFTER_S
from domain.topics import MAX_IDS
from handlers.base import ApiError, BaseHandler
from handlers.notifications import NotificationType
from handlers.schemas import Body
from handlers.topics import TopicKey, UserId


class TopicAudience(Body):
    topic: TopicKey


class UsersAudience(Body):
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=MAX_IDS)]


class EveryoneAudience(Body):
    all: Literal[True]


# One of the three (the first that fits, in this order, if a client sends more than one).
Audience = TopicAudience | UsersAudience | EveryoneAudience


class BroadcastRequest(Body):
    audience: Audience
    type: NotificationType
    category: Literal[CATEGORIES] = "marketing"  # type: ignore[valid-type]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str, Field(min_length=1, max_length=2000)]
    data: Annotated[dict, Field(max_length=50)] | None = None
    channels: Annotated[list[Literal[CHANNELS]], Field(min_length=1)] = list(CHANNELS)  # type: ignore[valid-type]
    priority: Literal[PRIORITIES] = "normal"  # type: ignore[valid-type]
    expires_after_s: Annotated[StrictInt, Field(gt=0, le=MAX_EXPIRES_AFTER_S)] | None = None


class BroadcastsHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Broadcast a notification to a topic, a list of users or everyone (service key or "
                            "admin); Idempotency-Key makes a retry the same broadcast. 202 {id}",
                 "body": BroadcastRequest, "status": 202, "auth": "service_or_admin"},
        "get": {"summary": "The most recent broadcasts with their progress (service key or admin)",
                "auth": "service_or_admin"},
    }

    async def post(self) -> None:
        caller = self.require_service_or_admin()
        request = self.parse(BroadcastRequest)
        key = self.request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 200:
            raise ApiError(422, "validation_failed", "Idempotency-Key must be 1 to 200 characters.")
        body = request.model_dump(exclude_none=True)
        body["channels"] = [c for c in CHANNELS if c in body["channels"]]
        doc, _ = await self.services.broadcasts.create(caller.id, key, body)
        self.send({"id": doc["_id"], "status": doc["status"]}, 202)

    async def get(self) -> None:
        self.require_service_or_admin()
        self.send({"items": [public_broadcast(doc) for doc in await self.services.broadcasts.recent()]})


class BroadcastHandler(BaseHandler):
    openapi = {"get": {"summary": "A broadcast's progress: {id, status, recipients, processed, counts: "
                                  "{channel: {status: n}}, created_at, finished_at}", "auth": "service_or_admin"}}

    async def get(self, broadcast_id: str) -> None:
        self.require_service_or_admin()
        self.send(public_broadcast(await self.services.broadcasts.get(broadcast_id)))


class BroadcastCancelHandler(BaseHandler):
    openapi = {"post": {"summary": "Cancel a broadcast: recipients not reached yet get nothing",
                        "auth": "service_or_admin"}}

    async def post(self, broadcast_id: str) -> None:
        self.require_service_or_admin()
        self.send(public_broadcast(await self.services.broadcasts.cancel(broadcast_id)))
