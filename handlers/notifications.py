"""The inbox (CONTRACT §2 "Notifications") and POST /api/v1/notifications for services."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StrictInt

from domain.clock import utcnow
from domain.errors import NotFound
from domain.events import cloud_event, topic_for
from domain.notification_policy import CATEGORIES, CHANNELS, PRIORITIES
from domain.notification_rules import notification_id
from domain.notifications import public_notification
from handlers.base import ApiError, BaseHandler
from handlers.schemas import Body, JsonObject

_REQUEST_NAMESPACE = uuid.UUID("0d7e3b55-8a4f-4b57-9d0e-6f2c1a9b7e44")


class InboxQuery(Body):
    unread: bool | None = None  # from the query string ("true"/"false"): a strict bool refuses every value
    limit: Annotated[int, Field(ge=1, le=100)] = 50
    before: datetime | None = None  # created_at of the last item of the previous page


class InboxHandler(BaseHandler):
    openapi = {"get": {"summary": "The caller's notifications, newest first, each with its deliveries; "
                                  "?unread=true|false, ?limit, ?before=<created_at> pages", "query": InboxQuery,
                       "auth": "user"}}

    async def get(self) -> None:
        caller = self.require_user()
        query = self.parse_query(InboxQuery)
        store = self.stores.notifications
        items = await store.inbox(caller.id, unread=query.unread, limit=query.limit, before=query.before)
        self.send({"items": [public_notification(doc) for doc in items],
                   "unread_count": await store.unread_count(caller.id)})


class ReadHandler(BaseHandler):
    openapi = {"post": {"summary": "Mark one of the caller's notifications read (404 if not theirs)", "auth": "user"}}

    async def post(self, notification_id: str) -> None:
        caller = self.require_user()
        doc = await self.stores.notifications.mark_read(caller.id, notification_id, utcnow())
        if doc is None:
            raise NotFound("No such notification.", code="notification_not_found")
        self.send(public_notification(doc))


class ReadAllHandler(BaseHandler):
    openapi = {"post": {"summary": "Mark all the caller's notifications read", "auth": "user"}}

    async def post(self) -> None:
        caller = self.require_user()
        updated = await self.stores.notifications.mark_all_read(caller.id, utcnow())
        self.send({"updated": updated, "unread_count": 0})


NotificationType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]


class NotificationRequest(Body):
    user_id: Annotated[str, Field(min_length=1, max_length=64)]
    type: NotificationType
    title: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str, Field(min_length=1, max_length=2000)]
    data: JsonObject | None = None
    channels: Annotated[list[Literal[CHANNELS]], Field(min_length=1)] | None = None  # type: ignore[valid-type]
    priority: Literal[PRIORITIES] = "normal"  # type: ignore[valid-type]
    category: Literal[CATEGORIES] | None = None  # type: ignore[valid-type]
    expires_after_s: Annotated[StrictInt, Field(gt=0, le=30 * 86400)] | None = None


class NotificationsHandler(BaseHandler):
    openapi = {"post": {"summary": "Ask for a notification to a user (service key or admin): it is published as "
                                   "notification.requested and delivered by the user's rules. Idempotency-Key "
                                   "makes a retry give the same id", "body": NotificationRequest, "status": 202,
                        "auth": "service"}}

    async def post(self) -> None:
        caller = self.require_service_or_admin()
        request = self.parse(NotificationRequest)
        if await self.stores.users.get(request.user_id) is None:
            raise NotFound("No such user.", code="user_not_found")
        key = self.request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 200:
            raise ApiError(422, "validation_failed", "Idempotency-Key must be 1 to 200 characters.")
        # A retry with the same key is the same event, so the engine records it once.
        event_id = uuid.uuid5(_REQUEST_NAMESPACE, f"{caller.id}\x00{key}").hex if key else uuid.uuid4().hex
        data = request.model_dump(exclude_none=True)
        event = cloud_event("notification.requested", self.config.event_source, data,
                            subject=request.user_id, event_id=event_id)
        kafka = self.services.kafka
        value = json.dumps(event).encode()
        await kafka.producer.send_and_wait(kafka.topic(topic_for(event["type"])), value,
                                           key=request.user_id.encode(), headers=kafka.signer.headers(value))
        self.send({"id": notification_id(event_id, request.type, request.user_id)}, 202)
