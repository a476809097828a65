"""Back-in-stock alerts: a user asks to hear when a sold-out product is available again
(the `back_in_stock` notification, sent once per request)."""

from __future__ import annotations

from handlers.base import BaseHandler


class StockAlertHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Notify me once when this product is back in stock", "status": 201, "auth": "user"},
        "delete": {"summary": "Cancel my back-in-stock alert for this product", "status": 204, "auth": "user"},
    }

    async def post(self, product_id: str) -> None:
        caller = self.require_user()
        product = await self.services.catalog.get(product_id)  # 404 for an unknown product
        await self.services.stock_alerts.add(product["_id"], caller.id)
        self.send({"product_id": product["_id"]}, 201)

    async def delete(self, product_id: str) -> None:
        caller = self.require_user()
        await self.services.stock_alerts.remove(product_id, caller.id)
        self.set_status(204)
        self.finish()
