"""Back-in-stock alerts: a user asks to hear when a sold-out product is available again
(the `back_in_stock` notification, sent once per request)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.errors import Conflict

MAX_PER_USER = 100


class StockAlerts:
    def __init__(self, alerts, *, clock: Callable[[], datetime]) -> None:
        self.alerts = alerts
        self.clock = clock

    async def add(self, product_id: str, user_id: str) -> None:
        """Idempotent; Conflict past MAX_PER_USER alerts."""
        if await self.alerts.count_for_user(user_id) >= MAX_PER_USER:
            raise Conflict(f"At most {MAX_PER_USER} stock alerts per user.", code="too_many_stock_alerts")
        await self.alerts.add(product_id, user_id, self.clock())

    async def remove(self, product_id: str, user_id: str) -> None:
        await self.alerts.remove(product_id, [user_id])
