"""The inbox (CONTRACT §2 "Notifications") and POST /api/v1/notifications for services."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StrictInt

from domain.inbox import MAX_PAGE
from domain.notification_policy import CATEGORIES, CHANNELS, PRIORITIES
from domain.notification_rules import MAX_EXPIRES_AFTER_S
from domain.notifications import public_notification
from handlers.base import BaseHandler
from handlers.schemas import Body, JsonObject


class InboxQuery(Body):
    unread: bool | None = None  # from the query string ("true"/"false"): a strict bool refuses every value
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50
    before: datetime | None = None  # created_at of the last item of the previous page


class InboxHandler(BaseHandler):
    openapi = {"get": {"summary": "The caller's notifications, newest first, each with its deliveries; "
                                  "?unread=true|false, ?limit, ?before=<created_at> pages", "query": InboxQuery,
                       "auth": "user"}}

    async def get(self) -> None:
        caller = self.require_user()
        query = self.parse_query(InboxQuery)
        items, unread_count = await self.services.inbox.page(caller.id, unread=query.unread, limit=query.limit,
                                                        before=query.before)
        self.send({"items": [public_notification(doc) for doc in items], "unread_count": unread_count})


class ReadHandler(BaseHandler):
    openapi = {"post": {"summary": "Mark one of the caller's notifications read (404 if not theirs)", "auth": "user"}}

    async def post(self, notification_id: str) -> None:
        caller = self.require_user()
        self.send(public_notification(await self.services.inbox.mark_read(caller.id, notification_id)))


class ReadAllHandler(BaseHandler):
    openapi = {"post": {"summary": "Mark all the caller's notifications read", "auth": "user"}}

    async def post(self) -> None:
        caller = self.require_user()
        updated = await self.services.inbox.mark_all_read(caller.id)
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
    expires_after_s: Annotated[StrictInt, Field(gt=0, le=MAX_EXPIRES_AFTER_S)] | None = None


class NotificationsHandler(BaseHandler):
    openapi = {"post": {"summary": "Ask for a notification to a user (service key or admin): it is published as "
                                   "notification.requested and delivered by the user's rules. Idempotency-Key "
                                   "makes a retry give the same id", "body": NotificationRequest, "status": 202,
                        "auth": "service"}}

    async def post(self) -> None:
        caller = self.require_service_or_admin()
        request = self.parse(NotificationRequest)
        notification_id = await self.services.service_events.request_notification(
            caller.id, self.request.headers.get("Idempotency-Key"), request.model_dump(exclude_none=True))
        self.send({"id": notification_id}, 202)
