"""The `products` collection, with stock held in the product document.

Every stock change is one conditional update that also appends its outbox entry, so the
change and its event are stored together. Stock taken or given back on behalf of an
order carries a *marker* `{id, qty, expires_at}` in `holds`: while the marker is there,
repeating the move is a no-op, and undoing it happens exactly once (the undo removes
the marker in the same update). Markers are settled (removed) once the order records the
move; the sweeper settles or undoes markers left behind by a process that died.
"""

from __future__ import annotations

import re
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from domain.products import stock_entry
from hub.stores.document_outbox import DocumentOutbox

_SORTS = {
    "newest": [("created_at", DESCENDING), ("_id", ASCENDING)],
    "price": [("price_minor", ASCENDING), ("_id", ASCENDING)],
    "-price": [("price_minor", DESCENDING), ("_id", ASCENDING)],
    "name": [("name", ASCENDING), ("_id", ASCENDING)],
}
LIVE = {"deleted": False}
_PUBLIC = {"outbox": 0, "holds": 0, "search_text": 0}


class ProductStore(DocumentOutbox):
    def __init__(self, db, on_outbox) -> None:
        self.col = db["products"]
        self.on_outbox = on_outbox  # called with a product id after its outbox grew

    async def create_indexes(self) -> None:
        await self.col.create_index("slug", unique=True, name="slug_unique")
        await self.col.create_index([("category", ASCENDING), ("price_minor", ASCENDING)], name="category_price")
        await self.col.create_index([("created_at", DESCENDING)], name="newest")
        await self.col.create_index("holds.expires_at", name="holds_expiry")
        await self.col.create_index("search_text", name="search")  # catalog search reads keys, not documents
        await self.create_outbox_index()

    @staticmethod
    def published(entries: list) -> dict:
        """Stock entries are JSON text (domain/products.py), matched whole."""
        return {"$in": entries}

    async def insert(self, doc: dict) -> bool:
        """False if the slug is taken."""
        try:
            await self.col.insert_one(doc)
        except DuplicateKeyError:
            return False
        if doc["outbox"]:
            self.on_outbox(doc["_id"])
        return True

    async def get(self, product_id: str) -> dict | None:
        return await self.col.find_one({"_id": product_id, **LIVE}, _PUBLIC)

    async def get_by_slug(self, slug: str) -> dict | None:
        return await self.col.find_one({"slug": slug, **LIVE}, _PUBLIC)

    async def get_many(self, product_ids: list[str]) -> dict[str, dict]:
        found = {}
        for product_id in product_ids:  # by id one at a time: each is an index hit
            doc = await self.get(product_id)
            if doc is not None:
                found[product_id] = doc
        return found

    async def search(self, *, q: str | None, category: str | None, min_price: int | None, max_price: int | None,
                     in_stock: bool | None, sort: str, skip: int, limit: int) -> tuple[list[dict], int]:
        query: dict = dict(LIVE)
        if q:
            query["search_text"] = {"$regex": re.escape(q.lower())}
        if category:
            query["category"] = category
        if min_price is not None or max_price is not None:
            query["price_minor"] = {k: v for k, v in (("$gte", min_price), ("$lte", max_price)) if v is not None}
        if in_stock is not None:
            query["stock"] = {"$gt": 0} if in_stock else 0
        cursor = self.col.find(query, _PUBLIC).sort(_SORTS[sort]).skip(skip).limit(limit)
        items = await cursor.to_list(limit)
        # A first page that is not full is the whole result: no need to count.
        total = len(items) if skip == 0 and len(items) < limit else await self.col.count_documents(query)
        return items, total

    async def update_fields(self, product_id: str, changes: dict, now: datetime) -> dict | None:
        """A new price is announced like a stock change that moves nothing (`price_changed`),
        so price and stock reach watchers on one channel, in order."""
        update: dict = {"$set": {**changes, "updated_at": now}}
        if "price_minor" in changes:
            update["$push"] = {"outbox": stock_entry(0, now, "price_changed")}
        doc = await self.col.find_one_and_update({"_id": product_id, **LIVE}, update, _PUBLIC,
                                                 return_document=ReturnDocument.AFTER)
        if doc is not None and "$push" in update:
            self.on_outbox(product_id)
        return doc

    async def soft_delete(self, product_id: str, now: datetime) -> bool:
        result = await self.col.update_one({"_id": product_id, **LIVE}, {"$set": {"deleted": True, "updated_at": now}})
        return result.modified_count == 1

    # Stock -------------------------------------------------------------------------
    async def _move(self, query: dict, update: dict, product_id: str) -> dict | None:
        doc = await self.col.find_one_and_update(query, update, _PUBLIC,
                                                 return_document=ReturnDocument.AFTER)
        if doc is not None:
            self.on_outbox(product_id)
        return doc

    async def adjust_stock(self, product_id: str, delta: int, now: datetime, reason: str) -> dict | None:
        """Add `delta` (may be negative) unless stock would go below zero. None if refused."""
        return await self._move(
            {"_id": product_id, **LIVE, "stock": {"$gte": max(0, -delta)}},
            {"$inc": {"stock": delta}, "$set": {"updated_at": now}, "$push": {"outbox": stock_entry(delta, now, reason)}},
            product_id,
        )

    async def set_stock(self, product_id: str, value: int, now: datetime, reason: str) -> dict | None:
        """Set stock to `value`, recorded as the delta from what it was (compare-and-set:
        a concurrent order in between makes it retry with the new figure)."""
        while True:
            current = await self.get(product_id)
            if current is None:
                return None
            delta = value - current["stock"]
            doc = await self._move(
                {"_id": product_id, **LIVE, "stock": current["stock"]},
                {"$set": {"stock": value, "updated_at": now}, "$push": {"outbox": stock_entry(delta, now, reason)}},
                product_id,
            )
            if doc is not None:
                return doc

    async def take(self, product_id: str, qty: int, marker: str, expires_at: datetime, now: datetime, order_id: str) -> bool:
        """Reserve `qty` if that much is in stock: one conditional update, never read-then-write."""
        doc = await self._move(
            {"_id": product_id, **LIVE, "stock": {"$gte": qty}, "holds.id": {"$ne": marker}},
            {"$inc": {"stock": -qty}, "$set": {"updated_at": now},
             "$push": {"holds": {"id": marker, "qty": qty, "expires_at": expires_at},
                       "outbox": stock_entry(-qty, now, "order", order_id)}},
            product_id,
        )
        return doc is not None

    async def give_back(self, product_id: str, qty: int, marker: str, expires_at: datetime, now: datetime,
                        order_id: str, reason: str) -> None:
        """Return `qty` to stock once: repeated while the marker stands, it does nothing."""
        await self._move(
            {"_id": product_id, "holds.id": {"$ne": marker}},
            {"$inc": {"stock": qty}, "$set": {"updated_at": now},
             "$push": {"holds": {"id": marker, "qty": qty, "expires_at": expires_at},
                       "outbox": stock_entry(qty, now, reason, order_id)}},
            product_id,
        )

    async def undo_take(self, product_id: str, marker: str, now: datetime, order_id: str, reason: str) -> None:
        """Give back what `take` reserved under `marker`, if it did; exactly once."""
        doc = await self.col.find_one({"_id": product_id, "holds.id": marker}, {"holds": 1})
        if doc is None:
            return
        qty = next(h["qty"] for h in doc["holds"] if h["id"] == marker)
        await self._move(
            {"_id": product_id, "holds.id": marker},
            {"$inc": {"stock": qty}, "$pull": {"holds": {"id": marker}}, "$set": {"updated_at": now},
             "$push": {"outbox": stock_entry(qty, now, reason, order_id)}},
            product_id,
        )

    async def settle(self, product_id: str, marker: str) -> None:
        await self.col.update_one({"_id": product_id, "holds.id": marker}, {"$pull": {"holds": {"id": marker}}})

    async def expired_holds(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(product id, marker) of markers past their expiry: left by a process that died."""
        cursor = self.col.find({"holds.expires_at": {"$lt": now}}, {"holds": 1}).limit(limit)
        return [(doc["_id"], hold["id"]) async for doc in cursor for hold in doc["holds"] if hold["expires_at"] < now]
