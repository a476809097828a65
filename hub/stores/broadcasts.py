"""The `broadcasts` collection: one document per broadcast, holding what to send, to whom,
how far its expansion got, and its progress.

- Expansion is leased (`lease_until`, `lease_owner`): one process at a time reads the
  audience a page after another and publishes each page as a batch, moving `cursor` on
  after each; when a process dies, its lease runs out and another takes up from the cursor.
- A batch is counted once: its page number joins `done_pages` in the same update that adds
  its recipients to `processed` and its deliveries to `counts`, guarded on the page not
  being there yet. A redelivered batch therefore never counts twice.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
_LIGHT = {"done_pages": 0, "audience": 0}


class BroadcastStore:
    def __init__(self, db) -> None:
        self.col = db["broadcasts"]

    async def create_indexes(self) -> None:
        await self.col.create_index([("expanded", ASCENDING), ("lease_until", ASCENDING)], name="expansion")
        await self.col.create_index([("created_at", DESCENDING)], name="recent")

    async def insert(self, doc: dict) -> dict | None:
        """Stores a new broadcast; None if one with its id (its idempotency key) exists."""
        try:
            await self.col.insert_one(doc)
            return doc
        except DuplicateKeyError:
            return None

    async def get(self, broadcast_id: str) -> dict | None:
        return await self.col.find_one({"_id": broadcast_id})

    async def get_light(self, broadcast_id: str) -> dict | None:
        """The broadcast without its longest parts (pages counted, a list audience)."""
        return await self.col.find_one({"_id": broadcast_id}, _LIGHT)

    async def page_counted(self, broadcast_id: str, page: int) -> bool:
        return await self.col.find_one({"_id": broadcast_id, "done_pages": page}, {"_id": 1}) is not None

    async def recent(self, limit: int) -> list[dict]:
        return await self.col.find({}, _LIGHT).sort("created_at", DESCENDING).limit(limit).to_list(None)

    async def to_expand(self, now: datetime, limit: int) -> list[str]:
        cursor = self.col.find({"expanded": False, "lease_until": {"$lte": now}}, {"_id": 1}).limit(limit)
        return [doc["_id"] async for doc in cursor]

    async def claim(self, broadcast_id: str, owner: str, now: datetime, until: datetime) -> dict | None:
        """Takes the expansion lease; the broadcast, or None if another process holds it."""
        return await self.col.find_one_and_update(
            {"_id": broadcast_id, "expanded": False, "lease_until": {"$lte": now}},
            {"$set": {"lease_until": until, "lease_owner": owner}}, return_document=ReturnDocument.AFTER)

    async def expanded_page(self, broadcast_id: str, owner: str, cursor, recipients: int, pages: int,
                            until: datetime, *, last: bool) -> dict | None:
        """Pages were published: moves the cursor on (and the status from queued to running)
        while the lease is still ours; None if it is not."""
        changes: dict = {"$set": {"cursor": cursor, "lease_until": until}, "$inc": {"pages": pages,
                                                                                   "recipients": recipients}}
        if last:
            changes["$set"]["expanded"] = True
        doc = await self.col.find_one_and_update({"_id": broadcast_id, "lease_owner": owner}, changes, _LIGHT,
                                                 return_document=ReturnDocument.AFTER)
        if doc is not None and doc["status"] == QUEUED:
            await self.col.update_one({"_id": broadcast_id, "status": QUEUED}, {"$set": {"status": RUNNING}})
        return doc

    async def stop_expanding(self, broadcast_id: str) -> None:
        await self.col.update_one({"_id": broadcast_id}, {"$set": {"expanded": True}})

    async def page_done(self, broadcast_id: str, page: int, *, processed: int, skipped: int,
                        counts: dict[tuple[str, str], int]) -> dict | None:
        """Counts a page once; the broadcast after, or None if the page was counted already."""
        inc = {"processed": processed, "skipped": skipped,
               **{f"counts.{channel}.{status}": n for (channel, status), n in counts.items() if n}}
        return await self.col.find_one_and_update(
            {"_id": broadcast_id, "done_pages": {"$ne": page}},
            {"$inc": inc, "$push": {"done_pages": page}}, _LIGHT, return_document=ReturnDocument.AFTER)

    async def add_counts(self, broadcast_id: str, counts: dict[tuple[str, str], int]) -> dict | None:
        """Deliveries that moved on later (held ones released, retries); the broadcast after."""
        inc = {f"counts.{channel}.{status}": n for (channel, status), n in counts.items() if n}
        if not inc:
            return None
        return await self.col.find_one_and_update({"_id": broadcast_id}, {"$inc": inc}, _LIGHT,
                                                  return_document=ReturnDocument.AFTER)

    async def finish(self, broadcast_id: str, now: datetime) -> bool:
        result = await self.col.update_one({"_id": broadcast_id, "status": {"$in": [QUEUED, RUNNING]}},
                                           {"$set": {"status": DONE, "finished_at": now}})
        return result.modified_count == 1

    async def cancel(self, broadcast_id: str, now: datetime) -> dict | None:
        """Cancels a broadcast still queued or running; the broadcast after (whatever it was)."""
        await self.col.update_one({"_id": broadcast_id, "status": {"$in": [QUEUED, RUNNING]}},
                                  {"$set": {"status": CANCELLED, "finished_at": now, "expanded": True}})
        return await self.get_light(broadcast_id)
