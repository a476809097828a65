"""A user's inbox (CONTRACT §2 "Notifications"): their notifications, newest first, and
marking them read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.errors import NotFound

MAX_PAGE = 100  # notifications in one page of the inbox


class Inbox:
    def __init__(self, notifications, *, clock: Callable[[], datetime]) -> None:
        self.notifications = notifications
        self.clock = clock

    async def page(self, user_id: str, *, unread: bool | None, limit: int, before: datetime | None) -> tuple[list[dict], int]:
        """Up to `limit` notifications created before `before`, and the user's unread count."""
        items = await self.notifications.inbox(user_id, unread=unread, limit=limit, before=before)
        return items, await self.notifications.unread_count(user_id)

    async def mark_read(self, user_id: str, notification_id: str) -> dict:
        doc = await self.notifications.mark_read(user_id, notification_id, self.clock())
        if doc is None:
            raise NotFound("No such notification.", code="notification_not_found")
        return doc

    async def mark_all_read(self, user_id: str) -> int:
        return await self.notifications.mark_all_read(user_id, self.clock())
