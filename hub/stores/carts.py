"""The `carts` collection: one document per user, `{items: [{product_id, quantity}],
coupon_code, points, version, updated_at, remind_at}`, plus an outbox for `cart.abandoned`
(published on the orders topic).

Every change is a compare-and-set on `version`, so two devices changing one cart at once
never lose each other's change. `remind_at` is when the cart becomes abandoned; the index
on it lets the reminder sweep read only the carts that are due.
"""

from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from hub.stores.document_outbox import WITHOUT_OUTBOX, DocumentOutbox, outbox_entry


class CartStore(DocumentOutbox):
    def __init__(self, db, on_outbox) -> None:
        self.col = db["carts"]
        self.on_outbox = on_outbox

    async def create_indexes(self) -> None:
        await self.col.create_index("remind_at", name="remind_due", sparse=True)
        await self.create_outbox_index()

    async def get(self, user_id: str) -> dict | None:
        return await self.col.find_one({"_id": user_id}, WITHOUT_OUTBOX)

    async def replace(self, user_id: str, version: int, fields: dict) -> bool:
        """Write `fields` as version `version + 1` if the cart is still at `version` (0: no cart yet)."""
        if version == 0:
            try:
                await self.col.insert_one({"_id": user_id, "version": 1, "outbox": [], **fields})
            except DuplicateKeyError:  # another device created it first
                return False
            return True
        result = await self.col.update_one({"_id": user_id, "version": version},
                                           {"$set": fields, "$inc": {"version": 1}})
        return result.modified_count == 1

    async def due_reminders(self, now: datetime, limit: int = 100) -> list[dict]:
        cursor = self.col.find({"remind_at": {"$lte": now}}, WITHOUT_OUTBOX).limit(limit)
        return await cursor.to_list(limit)

    async def finish_reminder(self, user_id: str, version: int, event: dict | None) -> bool:
        """Clear the due time of the cart as it was read, with `event` in its outbox (one
        conditional update: the reminder is recorded once whatever the number of sweepers)."""
        update: dict = {"$set": {"remind_at": None}}
        if event is not None:
            update["$push"] = {"outbox": outbox_entry(event, user_id)}
        result = await self.col.update_one({"_id": user_id, "version": version, "remind_at": {"$ne": None}}, update)
        if result.modified_count == 1 and event is not None:
            self.on_outbox(user_id)
        return result.modified_count == 1
