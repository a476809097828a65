"""The `payments` collection (one document per provider payment, e.g. a PaymentIntent)
and `webhook_events` (provider event ids already handled).

Each change is one update guarded by the id of the event that causes it, with its
outbox entry in the same update: a repeated event changes nothing and publishes nothing.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from hub.stores.document_outbox import WITHOUT_OUTBOX, DocumentOutbox, outbox_entry


class PaymentStore(DocumentOutbox):
    def __init__(self, db, on_outbox) -> None:
        self.col = db["payments"]
        self.seen = db["webhook_events"]
        self.on_outbox = on_outbox

    async def create_indexes(self) -> None:
        await self.col.create_index("order_id", name="order")
        await self.create_outbox_index()
        # Stripe retries a webhook for up to 3 days; keep its ids well beyond that.
        await self.seen.create_index("received_at", expireAfterSeconds=30 * 24 * 3600, name="received_ttl")

    async def was_seen(self, event_id: str) -> bool:
        return await self.seen.count_documents({"_id": event_id}) > 0

    async def mark_seen(self, event_id: str, event_type: str, now: datetime) -> None:
        try:
            await self.seen.insert_one({"_id": event_id, "type": event_type, "received_at": now})
        except DuplicateKeyError:
            pass

    async def get(self, payment_key: str) -> dict | None:
        return await self.col.find_one({"_id": payment_key}, WITHOUT_OUTBOX)

    async def for_order(self, order_id: str) -> list[dict]:
        return await self.col.find({"order_id": order_id}, WITHOUT_OUTBOX).sort("created_at", 1).to_list(100)

    async def _guarded_upsert(self, query: dict, update: dict, payment_key: str) -> dict | None:
        """None when the guard fails on an existing document (the upsert then collides on _id).
        A collision can also mean a racing event created the document just now: then one more
        try lets the guard judge that document (MongoDB retries only upserts whose filter is
        the _id alone)."""
        for attempt in range(2):
            try:
                doc = await self.col.find_one_and_update(query, update, WITHOUT_OUTBOX, upsert=True,
                                                         return_document=ReturnDocument.AFTER)
                break
            except DuplicateKeyError:
                if attempt:
                    return None
        if update.get("$push", {}).get("outbox"):
            self.on_outbox(payment_key)
        return doc

    async def succeed(self, key: str, base: dict, amount_minor: int, flags: list[str], event_id: str,
                      event: dict, now: datetime) -> dict | None:
        """Record the success once per payment; None if it had already succeeded."""
        return await self._guarded_upsert(
            {"_id": key, "status": {"$ne": "succeeded"}, "applied_events": {"$ne": event_id}},
            {"$setOnInsert": base,
             "$set": {"status": "succeeded", "amount_minor": amount_minor, "succeeded_at": now, "updated_at": now},
             "$addToSet": {"flags": {"$each": flags}},
             "$push": {"applied_events": event_id, "outbox": outbox_entry(event, base["order_id"])}},
            key,
        )

    async def fail(self, key: str, base: dict, amount_minor: int, reason: str, event_id: str, event: dict,
                   now: datetime) -> dict | None:
        """Record a failed attempt; a payment that already succeeded keeps its status."""
        return await self._guarded_upsert(
            {"_id": key, "applied_events": {"$ne": event_id}},
            {"$setOnInsert": {**base, "status": "failed", "amount_minor": amount_minor},
             "$set": {"updated_at": now},
             "$push": {"applied_events": event_id, "failures": {"reason": reason, "at": now},
                       "outbox": outbox_entry(event, base["order_id"])}},
            key,
        )

    async def refund_to(self, key: str, previous: int, refunded_total: int, event_id: str, event: dict,
                        now: datetime) -> dict | None:
        """Raise the refunded total from `previous` (compare-and-set); None if it moved meanwhile."""
        doc = await self.col.find_one_and_update(
            {"_id": key, "refunded_minor": previous, "applied_events": {"$ne": event_id}},
            {"$set": {"refunded_minor": refunded_total, "updated_at": now},
             "$push": {"applied_events": event_id, "outbox": outbox_entry(event, event["data"]["order_id"])}},
            WITHOUT_OUTBOX, return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            self.on_outbox(key)
        return doc

    async def add_flag(self, key: str, flag: str) -> None:
        await self.col.update_one({"_id": key}, {"$addToSet": {"flags": flag}})
