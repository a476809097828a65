"""The `coupons` collection: one document per coupon, holding its redemption count, a count
per user, and its outbox (`coupon.redeemed` / `coupon.released`, on the orders topic).

A redemption is taken like stock: one conditional update that checks the total limit and
the user's limit and leaves a marker `{id, user_id, expires_at}` in `holds`, so repeating it
is a no-op and undoing it happens once (the undo removes the marker in the same update).
Markers are settled once the order records the move; the sweep settles or undoes those a
process that died left behind.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from hub.stores.document_outbox import WITHOUT_OUTBOX, DocumentOutbox, outbox_entry
from hub.wiring.metrics import COUPON_REDEMPTIONS


class CouponStore(DocumentOutbox):
    def __init__(self, db, on_outbox) -> None:
        self.col = db["coupons"]
        self.on_outbox = on_outbox

    async def create_indexes(self) -> None:
        await self.col.create_index([("created_at", DESCENDING)], name="newest")
        await self.col.create_index("holds.expires_at", name="holds_expiry")
        await self.col.create_index("expiring_notice_at", name="expiring_notice", sparse=True)
        await self.create_outbox_index()

    async def insert(self, doc: dict) -> bool:
        try:
            await self.col.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def get(self, code: str) -> dict | None:
        return await self.col.find_one({"_id": code}, WITHOUT_OUTBOX)

    async def list(self, *, active: bool | None, skip: int, limit: int) -> tuple[list[dict], int]:
        query = {} if active is None else {"active": active}
        cursor = self.col.find(query, WITHOUT_OUTBOX).sort([("created_at", DESCENDING), ("_id", 1)]).skip(skip).limit(limit)
        return await cursor.to_list(limit), await self.col.count_documents(query)

    async def set_active(self, code: str, active: bool, now: datetime) -> dict | None:
        return await self.col.find_one_and_update({"_id": code}, {"$set": {"active": active, "updated_at": now}},
                                                  WITHOUT_OUTBOX, return_document=ReturnDocument.AFTER)

    async def _move(self, query: dict, update: dict, code: str, *, outcome: str | None = None) -> bool:
        doc = await self.col.find_one_and_update(query, update, {"_id": 1})
        if doc is not None:
            self.on_outbox(code)
            if outcome:
                COUPON_REDEMPTIONS.labels(outcome).inc()
        return doc is not None

    async def take(self, code: str, user_id: str, *, limit: int, per_user_limit: int, marker: str,
                   expires_at: datetime, now: datetime, event: dict, key: str) -> bool:
        """One redemption for `user_id` if the coupon is active and both limits allow it."""
        used = f"users.{user_id}"
        taken = await self._move(
            {"_id": code, "active": True, "redeemed": {"$lt": limit}, "holds.id": {"$ne": marker},
             "$or": [{used: {"$exists": False}}, {used: {"$lt": per_user_limit}}]},
            {"$inc": {"redeemed": 1, used: 1}, "$set": {"updated_at": now},
             "$push": {"holds": {"id": marker, "user_id": user_id, "expires_at": expires_at},
                       "outbox": outbox_entry(event, key)}},
            code)
        COUPON_REDEMPTIONS.labels("redeemed" if taken else "refused").inc()
        return taken

    async def undo_take(self, code: str, marker: str, now: datetime, event: dict, key: str) -> bool:
        """Give back what `take` counted under `marker`, if it did; exactly once."""
        doc = await self.col.find_one({"_id": code, "holds.id": marker}, {"holds": 1})
        if doc is None:
            return False
        user_id = next(h["user_id"] for h in doc["holds"] if h["id"] == marker)
        return await self._move(
            {"_id": code, "holds.id": marker},
            {"$inc": {"redeemed": -1, f"users.{user_id}": -1}, "$pull": {"holds": {"id": marker}},
             "$set": {"updated_at": now}, "$push": {"outbox": outbox_entry(event, key)}},
            code, outcome="released")

    async def give_back(self, code: str, user_id: str, marker: str, expires_at: datetime, now: datetime,
                        event: dict, key: str) -> bool:
        """Release one redemption of `user_id` once: repeated while the marker stands, it does nothing."""
        return await self._move(
            {"_id": code, "holds.id": {"$ne": marker}},
            {"$inc": {"redeemed": -1, f"users.{user_id}": -1}, "$set": {"updated_at": now},
             "$push": {"holds": {"id": marker, "user_id": user_id, "expires_at": expires_at},
                       "outbox": outbox_entry(event, key)}},
            code, outcome="released")

    async def settle(self, code: str, marker: str) -> None:
        await self.col.update_one({"_id": code, "holds.id": marker}, {"$pull": {"holds": {"id": marker}}})

    async def expired_holds(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        cursor = self.col.find({"holds.expires_at": {"$lt": now}}, {"holds": 1}).limit(limit)
        return [(doc["_id"], hold["id"]) async for doc in cursor for hold in doc["holds"] if hold["expires_at"] < now]

    # Expiry notices --------------------------------------------------------------------
    async def expiring_due(self, now: datetime, limit: int = 50) -> list[dict]:
        cursor = self.col.find({"expiring_notice_at": {"$lte": now}}, {"outbox": 0, "holds": 0}).limit(limit)
        return await cursor.to_list(limit)

    async def lease_expiring(self, code: str, due: datetime, until: datetime) -> bool:
        """Claim a coupon's expiry notices until `until` (compare-and-set on the due time:
        one process sends them; if it dies, another takes over when the lease ends)."""
        result = await self.col.update_one({"_id": code, "expiring_notice_at": due},
                                           {"$set": {"expiring_notice_at": until}})
        return result.modified_count == 1

    async def finish_expiring(self, code: str) -> None:
        await self.col.update_one({"_id": code}, {"$set": {"expiring_notice_at": None, "expiring_noticed": True}})
