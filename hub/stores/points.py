"""The `points_accounts` collection: one document per user holding the balance and the
append-only ledger of entries that produced it.

Balance and entry change in one update, guarded by the entry id (so a repeated award,
reversal or redemption is a no-op) and by the balance itself (so it never goes negative
and no update is lost), with the `points.*` event in the same update's outbox.

Entries are stored as JSON text, their ids beside them in `entry_ids` for the guard: the
embedded store copies the whole document on every update, and a long ledger of
sub-documents with dates made each award cost milliseconds.
"""

from __future__ import annotations

import json
from datetime import datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from hub.stores.document_outbox import DocumentOutbox, outbox_entry


class PointsStore(DocumentOutbox):
    def __init__(self, db, on_outbox) -> None:
        self.col = db["points_accounts"]
        self.redemptions = db["redemptions"]
        self.on_outbox = on_outbox

    async def create_indexes(self) -> None:
        await self.create_outbox_index()
        await self.col.create_index("next_expiry", name="next_expiry", sparse=True)
        await self.col.create_index("holds.expires_at", name="holds_expiry")
        await self.redemptions.create_index([("user_id", 1), ("created_at", -1)], name="user_newest")

    async def account(self, user_id: str) -> dict:
        doc = await self.col.find_one({"_id": user_id}, {"outbox": 0, "entry_ids": 0})
        if doc is None:
            return {"_id": user_id, "balance": 0, "entries": []}
        doc["entries"] = [_decode(text) for text in doc["entries"]]
        return doc

    async def apply(self, user_id: str, entry: dict, event: dict, *, expected_balance: int,
                    hold: dict | None = None) -> bool:
        """Append `entry` and add its delta to the balance if the balance is still
        `expected_balance` and the entry is new; False otherwise (nothing changed). `hold`
        (a marker `{id, expires_at}`, like a product's) is left in the same update."""
        query: dict = {"_id": user_id, "entry_ids": {"$ne": entry["id"]}, "balance": expected_balance}
        update = {"$inc": {"balance": entry["delta"]}, "$set": {"updated_at": entry["at"]},
                  "$push": {"entries": _encode(entry), "entry_ids": entry["id"],
                            "outbox": outbox_entry(event, user_id)}}
        if hold is not None:
            update["$push"]["holds"] = hold
        if entry.get("expires_at"):
            update["$min"] = {"next_expiry": entry["expires_at"]}
        try:
            # A first credit creates the account; for an existing one the upsert collides on _id.
            doc = await self.col.find_one_and_update(query, update, {"_id": 1}, upsert=expected_balance == 0,
                                                     return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:  # the account exists and the guard failed: a repeat
            return False
        if doc is None:
            return False
        self.on_outbox(user_id)
        return True

    async def has_entry(self, user_id: str, entry_id: str) -> bool:
        return await self.col.count_documents({"_id": user_id, "entry_ids": entry_id}) > 0

    async def settle(self, user_id: str, marker: str) -> None:
        await self.col.update_one({"_id": user_id, "holds.id": marker}, {"$pull": {"holds": {"id": marker}}})

    async def expired_holds(self, now, limit: int = 500) -> list[tuple[str, str]]:
        """(user id, marker) of markers past their expiry: left by a process that died."""
        cursor = self.col.find({"holds.expires_at": {"$lt": now}}, {"holds": 1}).limit(limit)
        return [(doc["_id"], hold["id"]) async for doc in cursor for hold in doc["holds"] if hold["expires_at"] < now]

    async def due_for_expiry(self, now, limit: int = 200) -> list[str]:
        cursor = self.col.find({"next_expiry": {"$lte": now}}, {"_id": 1}).limit(limit)
        return [doc["_id"] async for doc in cursor]

    async def set_next_expiry(self, user_id: str, entry_count: int, next_expiry) -> bool:
        """Compare-and-set on the ledger's length: an entry added meanwhile means look again."""
        result = await self.col.update_one({"_id": user_id, "entry_ids": {"$size": entry_count}},
                                           {"$set": {"next_expiry": next_expiry}})
        return result.matched_count == 1

    # Redemptions ---------------------------------------------------------------------
    async def redemption(self, redemption_id: str) -> dict | None:
        return await self.redemptions.find_one({"_id": redemption_id})

    async def insert_redemption(self, redemption: dict) -> None:
        await self.redemptions.insert_one(redemption)

    async def set_redemption_status(self, redemption_id: str, status: str) -> None:
        await self.redemptions.update_one({"_id": redemption_id}, {"$set": {"status": status}})

    async def user_redemptions(self, user_id: str) -> list[dict]:
        return await self.redemptions.find({"user_id": user_id, "status": "completed"}).sort("created_at", -1).to_list(100)


_DATES = ("at", "expires_at")


def _encode(entry: dict) -> str:
    return json.dumps({k: v.isoformat() if k in _DATES and v else v for k, v in entry.items()})


def _decode(text: str) -> dict:
    entry = json.loads(text)
    for k in _DATES:
        if entry.get(k):
            entry[k] = datetime.fromisoformat(entry[k])
    return entry
