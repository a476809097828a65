"""What providers report afterwards about a delivery (Twilio's SMS status callbacks).

Reports arrive out of order, so a delivery only moves forward: sent → delivered or failed,
never back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.notification_policy import DELIVERED, FAILED, QUEUED, SENT

# A reported status → the statuses a delivery may move to it from.
_FORWARD_FROM = {SENT: [QUEUED], DELIVERED: [QUEUED, SENT], FAILED: [QUEUED, SENT]}


class DeliveryReports:
    def __init__(self, notifications, *, clock: Callable[[], datetime],
                 on_delivery: Callable[[str, str, str | None], None]) -> None:
        self.notifications = notifications
        self.clock = clock
        self.on_delivery = on_delivery  # (channel, status, reason), as the notifier counts its own

    async def report(self, notification_id: str, channel: str, status: str, *, provider_id: str | None,
                     reason: str | None = None) -> bool:
        """Moves the notification's delivery on `channel` to `status` (SENT, DELIVERED or FAILED)
        if that is forward; whether it moved."""
        fields = {"at": self.clock(), "provider_id": provider_id}
        if reason is not None:
            fields["reason"] = reason
        doc = await self.notifications.advance_delivery(notification_id, channel, status, _FORWARD_FROM[status], fields)
        if doc is not None:
            self.on_delivery(channel, status, reason)
        return doc is not None
