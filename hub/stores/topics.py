"""The `topics` collection (a topic's name and whether users may join it themselves) and
`topic_members` (one small document per (topic, user), `_id` "<topic>/<user id>").

Membership lives apart from the topic so that a topic of 600,000 members is 600,000 tiny
documents, not one huge one: adding or removing is a bulk insert or delete by `_id`, and
a broadcast reads the members in pages of thousands, each page one query on the
(topic, user_id) index, resumed after the last user id of the page before.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

DUPLICATE_KEY = 11000


class TopicStore:
    def __init__(self, db) -> None:
        self.col = db["topics"]
        self.members = db["topic_members"]

    async def create_indexes(self) -> None:
        await self.members.create_index([("topic", ASCENDING), ("user_id", ASCENDING)], name="topic_user")
        await self.members.create_index("user_id", name="user")

    async def put(self, key: str, changes: dict, now: datetime) -> dict:
        """Creates the topic or changes its name / public flag; the topic after."""
        for _ in range(2):  # two first PUTs racing: the loser's upsert hits the unique _id
            try:
                update = {"$setOnInsert": {"created_at": now}, **({"$set": changes} if changes else {})}
                return await self.col.find_one_and_update({"_id": key}, update, upsert=True,
                                                          return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                continue
        return await self.col.find_one({"_id": key})

    async def get(self, key: str) -> dict | None:
        return await self.col.find_one({"_id": key})

    async def all(self, limit: int) -> list[dict]:
        return await self.col.find({}).sort("_id", ASCENDING).limit(limit).to_list(None)

    async def count(self, key: str) -> int:
        return await self.members.count_documents({"topic": key})

    async def add(self, key: str, user_ids: list[str], now: datetime) -> int:
        """Adds the members (already checked to be users); returns how many were new."""
        if not user_ids:
            return 0
        docs = [{"_id": f"{key}/{u}", "topic": key, "user_id": u, "added_at": now} for u in user_ids]
        try:
            result = await self.members.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:  # members already: adding is idempotent
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            return exc.details.get("nInserted", 0)

    async def remove(self, key: str, user_ids: list[str]) -> int:
        if not user_ids:
            return 0
        result = await self.members.delete_many({"_id": {"$in": [f"{key}/{u}" for u in user_ids]}})
        return result.deleted_count

    async def page(self, key: str, after: str | None, limit: int) -> list[str]:
        """Up to `limit` member ids in id order, after `after` (one indexed range query)."""
        query: dict = {"topic": key}
        if after is not None:
            query["user_id"] = {"$gt": after}
        cursor = self.members.find(query, {"user_id": 1}).sort("user_id", ASCENDING).limit(limit)
        return [doc["user_id"] async for doc in cursor]
