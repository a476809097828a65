"""The outbox a document carries (orders, products, payments, points accounts, coupons, carts):
entries appended in the same update as the change they describe, read and removed by the relay
(hub/workers/outbox.py) once Kafka has them. A store over `self.col` gets it by inheriting
DocumentOutbox; the `outbox` collection's store (one entry per document, deleted once published,
found by its own scan) inherits only OutboxSource, the relay's read."""

from __future__ import annotations

from collections.abc import AsyncIterator

_PENDING = {"outbox.0": {"$exists": True}}
WITHOUT_OUTBOX = {"outbox": 0}  # the projection of what a store's readers see


def outbox_entry(event: dict, key: str) -> dict:
    """One of the hub's events in a document's outbox, published keyed by `key` (the aggregate id)."""
    return {"id": event["id"], "key": key, "event": event}


class OutboxSource:
    """What the relay reads a document to publish through, in any store with an outbox."""

    async def outbox_of(self, doc_id: str) -> dict | None:
        """The whole document (events are rendered from it), or None when it has nothing to publish."""
        doc = await self.col.find_one({"_id": doc_id})
        return doc if doc and doc.get("outbox") else None


class DocumentOutbox(OutboxSource):
    """An outbox inside the documents of a collection that holds other things too."""

    async def create_outbox_index(self) -> None:
        """Lets the relay's recovery scan find documents with unpublished events cheaply."""
        await self.col.create_index("updated_at", name="outbox_pending", partialFilterExpression=_PENDING)

    async def pending_ids(self) -> AsyncIterator[str]:
        """The ids of the documents holding unpublished entries."""
        async for doc in self.col.find(_PENDING, {"_id": 1}):
            yield doc["_id"]

    async def mark_published(self, doc_id: str, entries: list) -> None:
        """Removes the published `entries`; those appended meanwhile stay for the next round."""
        await self.col.update_one({"_id": doc_id}, {"$pull": {"outbox": self.published(entries)}})

    @staticmethod
    def published(entries: list) -> dict:
        """The $pull condition matching `entries`."""
        return {"id": {"$in": [entry["id"] for entry in entries]}}
