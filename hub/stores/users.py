"""The `users` collection."""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from domain.errors import Conflict


class UserStore:
    def __init__(self, db) -> None:
        self.col = db["users"]

    async def create_indexes(self) -> None:
        # The unique index is what makes two racing registrations give one 201 and one 409.
        await self.col.create_index("email", unique=True, name="email_unique")

    async def insert(self, user: dict) -> None:
        try:
            await self.col.insert_one(user)
        except DuplicateKeyError:
            raise Conflict("An account with this email already exists.", code="email_taken") from None

    async def get(self, user_id: str) -> dict | None:
        return await self.col.find_one({"_id": user_id})

    async def by_email(self, email: str) -> dict | None:
        return await self.col.find_one({"email": email})

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self.col.update_one({"_id": user_id}, {"$set": {"password_hash": password_hash}})

    async def update_profile(self, user_id: str, changes: dict) -> dict | None:
        if not changes:
            return await self.get(user_id)
        return await self.col.find_one_and_update(
            {"_id": user_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
        )

    async def admins(self) -> list[dict]:
        return await self.col.find({"roles": "admin"}).to_list(None)

    async def add_push_subscription(self, user_id: str, subscription: dict, limit: int) -> bool:
        """Adds (or refreshes) a device's subscription, keyed by endpoint; False when the
        user already has `limit` other devices."""
        await self.col.update_one({"_id": user_id}, {"$pull": {"push_subscriptions": {"endpoint": subscription["endpoint"]}}})
        result = await self.col.update_one(
            {"_id": user_id, f"push_subscriptions.{limit - 1}": {"$exists": False}},
            {"$push": {"push_subscriptions": subscription}})
        return result.modified_count == 1

    async def mark_email_bounced(self, user_id: str, address: str, reason: str, at: datetime) -> None:
        """Remembers that `address` bounced, if it is still the user's address."""
        await self.col.update_one({"_id": user_id, "email": address},
                                  {"$set": {"email_bounce": {"address": address, "reason": reason, "at": at}}})

    async def clear_email_bounce(self, user_id: str, address: str) -> None:
        await self.col.update_one({"_id": user_id, "email_bounce.address": address}, {"$unset": {"email_bounce": ""}})

    async def remove_push_subscriptions(self, user_id: str, endpoints: list[str]) -> int:
        result = await self.col.update_one({"_id": user_id},
                                           {"$pull": {"push_subscriptions": {"endpoint": {"$in": endpoints}}}})
        return result.modified_count

    # Audiences (broadcasts, topics) ------------------------------------------------------
    async def existing(self, user_ids: list[str]) -> set[str]:
        """Which of these ids name a user (one query)."""
        return {doc["_id"] async for doc in self.col.find({"_id": {"$in": user_ids}}, {"_id": 1})}

    async def many(self, user_ids: list[str]) -> list[dict]:
        """The users with these ids that exist, in one query."""
        return await self.col.find({"_id": {"$in": user_ids}}).to_list(None)

    async def page(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` user ids in id order after `after`: every user, a page at a time."""
        query = {} if after is None else {"_id": {"$gt": after}}
        return [doc["_id"] async for doc in self.col.find(query, {"_id": 1}).sort("_id", 1).limit(limit)]

    async def count(self) -> int:
        return await self.col.count_documents({})

    async def set_channel_preference(self, user_id: str, channel: str, setting: dict) -> bool:
        """Replaces one channel's preference, leaving the rest as they are."""
        result = await self.col.update_one({"_id": user_id}, {"$set": {f"preferences.channels.{channel}": setting}})
        return result.matched_count == 1
