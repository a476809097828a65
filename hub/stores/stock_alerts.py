"""The `stock_alerts` collection: who asked to hear when a product is back in stock."""

from __future__ import annotations

from datetime import datetime


class StockAlertStore:
    def __init__(self, db) -> None:
        self.col = db["stock_alerts"]

    async def create_indexes(self) -> None:
        await self.col.create_index("product_id", name="product")
        await self.col.create_index("user_id", name="user")

    async def add(self, product_id: str, user_id: str, at: datetime) -> None:
        await self.col.update_one({"_id": f"{product_id}/{user_id}"},
                                  {"$setOnInsert": {"product_id": product_id, "user_id": user_id, "created_at": at}},
                                  upsert=True)

    async def count_for_user(self, user_id: str) -> int:
        return await self.col.count_documents({"user_id": user_id})

    async def remove(self, product_id: str, user_ids: list[str]) -> int:
        result = await self.col.delete_many({"_id": {"$in": [f"{product_id}/{u}" for u in user_ids]}})
        return result.deleted_count

    async def watchers(self, product_id: str) -> list[str]:
        return [doc["user_id"] async for doc in self.col.find({"product_id": product_id}, {"user_id": 1})]

    async def for_user(self, user_id: str) -> list[dict]:
        return await self.col.find({"user_id": user_id}).sort("created_at", 1).to_list(None)
