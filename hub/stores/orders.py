"""The `orders` collection. Each order document carries its own outbox: events are
appended in the same update as the change they describe."""

from __future__ import annotations

from datetime import datetime

from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from domain.orders import ABORTED, PLACING
from hub.stores.document_outbox import WITHOUT_OUTBOX, DocumentOutbox, outbox_entry

HIDDEN = {"$nin": [PLACING, ABORTED]}


class OrderStore(DocumentOutbox):
    def __init__(self, db, on_outbox) -> None:
        self.col = db["orders"]
        self.counters = db["counters"]
        self.on_outbox = on_outbox  # called with an order id after its outbox grew

    async def create_indexes(self) -> None:
        """The indexes, and the order-number counter: created here, once, so that numbering
        is a plain $inc (racing upserts of one document are retried by MongoDB itself, but
        not by every server that speaks its protocol)."""
        try:
            await self.counters.insert_one({"_id": "order_number", "seq": 0})
        except DuplicateKeyError:
            pass  # made by an earlier start or another process
        await self.col.create_index("number", unique=True, name="number_unique")
        await self.col.create_index([("user_id", 1), ("created_at", DESCENDING)], name="user_newest")
        await self.col.create_index([("status", 1), ("created_at", 1)], name="status_age")
        await self.create_outbox_index()
        await self.col.create_index("updated_at", name="release_pending",
                                    partialFilterExpression={"release_pending": True})
        await self.col.create_index("refund_due_at", name="refund_pending",
                                    partialFilterExpression={"refund_pending": True})

    async def next_number(self) -> int:
        """A unique, increasing sequence from one atomic $inc (no read-max-then-increment)."""
        doc = await self.counters.find_one_and_update(
            {"_id": "order_number"}, {"$inc": {"seq": 1}}, return_document=ReturnDocument.AFTER
        )
        return doc["seq"]

    async def insert(self, order: dict) -> bool:
        """False if an order with this id exists (the id derives from the idempotency key)."""
        try:
            await self.col.insert_one(order)
        except DuplicateKeyError:
            return False
        return True

    async def count_unpaid(self, user_id: str) -> int:
        """The user's orders being placed or awaiting payment."""
        return await self.col.count_documents({"user_id": user_id, "status": {"$in": [PLACING, "pending"]}})

    async def get(self, order_id: str, *, include_hidden: bool = False) -> dict | None:
        query = {"_id": order_id} if include_hidden else {"_id": order_id, "status": HIDDEN}
        return await self.col.find_one(query, WITHOUT_OUTBOX)

    async def list(self, *, user_id: str | None, status: str | None, skip: int, limit: int) -> tuple[list[dict], int]:
        query: dict = {"status": status or HIDDEN}
        if user_id is not None:
            query["user_id"] = user_id
        total = await self.col.count_documents(query)
        cursor = self.col.find(query, WITHOUT_OUTBOX).sort([("created_at", DESCENDING), ("_id", 1)]).skip(skip).limit(limit)
        return await cursor.to_list(limit), total

    async def move(self, order_id: str, from_status: str, to_status: str, *, history: dict, event: dict | None,
                   now: datetime, extra: dict | None = None, event_id: str | None = None,
                   unchanged: dict | None = None) -> dict | None:
        """Compare-and-set the status; appends the history entry and the event in the same
        update. `event_id` (an applied external event) is remembered so a redelivery is a no-op.
        `unchanged`: fields that must still have these values (None: absent) for the move."""
        query: dict = {**(unchanged or {}), "_id": order_id, "status": from_status}
        update: dict = {"$set": {"status": to_status, "updated_at": now, **(extra or {})},
                        "$push": {"status_history": history}}
        if event is not None:
            update["$push"]["outbox"] = outbox_entry(event, order_id)
        if event_id is not None:
            query["applied_events"] = {"$ne": event_id}
            update["$push"]["applied_events"] = {"$each": [event_id], "$slice": -100}
        doc = await self.col.find_one_and_update(query, update, WITHOUT_OUTBOX, return_document=ReturnDocument.AFTER)
        if doc is not None and event is not None:
            self.on_outbox(order_id)
        return doc

    async def set_payment_intent(self, order_id: str, intent: dict) -> dict:
        """Keep the first intent stored for the order; the one stored is returned."""
        await self.col.update_one({"_id": order_id, "payment_intent": None}, {"$set": {"payment_intent": intent}})
        return (await self.col.find_one({"_id": order_id}, {"payment_intent": 1}))["payment_intent"]

    async def claim_payment(self, order_id: str, payment_key: str) -> bool:
        """Record which payment pays the order, if none does yet."""
        result = await self.col.update_one({"_id": order_id, "paid_by": None, "status": {"$nin": ["cancelled", "refunded"]}},
                                           {"$set": {"paid_by": payment_key}})
        return result.modified_count == 1

    async def claim_for_refund(self, order_id: str, payment_key: str, due_at: datetime) -> dict | None:
        """A payment that came after its order was cancelled: recorded as paying the order,
        with its refund due (the sweep's from `due_at`). None if the order is not cancelled or
        another payment already pays it."""
        return await self.col.find_one_and_update(
            {"_id": order_id, "status": "cancelled", "paid_by": None},
            {"$set": {"paid_by": payment_key, "refund_pending": True, "refund_due_at": due_at}},
            WITHOUT_OUTBOX, return_document=ReturnDocument.AFTER)

    async def has_applied(self, order_id: str, event_id: str) -> bool:
        return await self.col.count_documents({"_id": order_id, "applied_events": event_id}) > 0

    async def abort_placing(self, order_id: str) -> bool:
        """Claim a stalled placement for clean-up (compare-and-set: one claimant wins)."""
        result = await self.col.update_one({"_id": order_id, "status": PLACING}, {"$set": {"status": ABORTED}})
        return result.modified_count == 1

    async def delete_placing(self, order_id: str) -> None:
        await self.col.delete_one({"_id": order_id, "status": {"$in": [PLACING, ABORTED]}})

    async def mark_restocked(self, order_id: str, product_id: str) -> None:
        await self.col.update_one({"_id": order_id}, {"$addToSet": {"restocked": product_id}})

    async def finish_restock(self, order_id: str) -> None:
        await self.col.update_one({"_id": order_id}, {"$set": {"restock_pending": False}})

    async def finish_refund(self, order_id: str) -> None:
        await self.col.update_one({"_id": order_id}, {"$set": {"refund_pending": False}})

    async def retry_refund(self, order_id: str, due_at: datetime) -> None:
        """The refund could not be made now: the sweep tries again from `due_at`."""
        await self.col.update_one({"_id": order_id, "refund_pending": True},
                                  {"$set": {"refund_due_at": due_at}, "$inc": {"refund_attempts": 1}})

    # For the sweeper ---------------------------------------------------------------
    async def stale_placing(self, before: datetime, limit: int = 200) -> list[dict]:
        cursor = self.col.find({"status": {"$in": [PLACING, ABORTED]}, "placing_expires_at": {"$lt": before}},
                               WITHOUT_OUTBOX).limit(limit)
        return await cursor.to_list(limit)

    async def unpaid(self, created_before: datetime, limit: int = 200) -> list[dict]:
        cursor = self.col.find({"status": "pending", "created_at": {"$lt": created_before}}, WITHOUT_OUTBOX).limit(limit)
        return await cursor.to_list(limit)

    async def restock_unfinished(self, updated_before: datetime, limit: int = 200) -> list[dict]:
        cursor = self.col.find({"restock_pending": True, "updated_at": {"$lt": updated_before}}, WITHOUT_OUTBOX).limit(limit)
        return await cursor.to_list(limit)

    async def refund_due(self, now: datetime, limit: int = 200) -> list[dict]:
        """Cancelled paid orders whose refund is not settled and is due again (the provider was
        unreachable, or the cancelling process died)."""
        cursor = self.col.find({"refund_pending": True, "refund_due_at": {"$lte": now}}, WITHOUT_OUTBOX).limit(limit)
        return await cursor.to_list(limit)

    # Coupons and points of an order (domain/checkout.py) -----------------------------------
    async def set_fields(self, order_id: str, fields: dict) -> None:
        await self.col.update_one({"_id": order_id}, {"$set": fields})

    async def release_unfinished(self, updated_before: datetime, limit: int = 200) -> list[dict]:
        cursor = self.col.find({"release_pending": True, "updated_at": {"$lt": updated_before}}, WITHOUT_OUTBOX).limit(limit)
        return await cursor.to_list(limit)

    async def placed_since(self, user_id: str, since: datetime) -> bool:
        """Whether the user placed an order at or after `since` (the cart reminder's test)."""
        return await self.col.count_documents({"user_id": user_id, "created_at": {"$gte": since},
                                               "status": HIDDEN}, limit=1) > 0
