"""The `devices` collection: native push targets (APNs and FCM tokens), one document per
token. A token is unique across users (index on platform + token): registering it again
updates it; registered by another user, it moves to the caller (one phone, one owner)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError


class DeviceStore:
    def __init__(self, db) -> None:
        self.col = db["devices"]

    async def create_indexes(self) -> None:
        await self.col.create_index([("platform", ASCENDING), ("token", ASCENDING)], unique=True, name="token_unique")
        await self.col.create_index([("user_id", ASCENDING), ("created_at", ASCENDING)], name="by_user")

    async def register(self, user_id: str, platform: str, token: str, fields: dict, now: datetime,
                       limit: int) -> tuple[dict, bool]:
        """(device, created). The same token again keeps its id; a token of another user
        is taken from them and gets a new id. Past `limit` devices, the user's oldest go."""
        for _ in range(2):  # a racing registration of the same token: the second finds the first
            existing = await self.col.find_one({"platform": platform, "token": token})
            if existing is not None and existing["user_id"] == user_id:
                await self.col.update_one({"_id": existing["_id"]}, {"$set": {**fields, "seen_at": now}})
                return {**existing, **fields, "seen_at": now}, False
            if existing is not None:
                await self.col.delete_one({"_id": existing["_id"], "user_id": existing["user_id"]})
            device = {"_id": uuid.uuid4().hex, "user_id": user_id, "platform": platform, "token": token,
                      **fields, "created_at": now, "seen_at": now}
            try:
                await self.col.insert_one(device)
            except DuplicateKeyError:
                continue
            await self._evict(user_id, limit)
            return device, True
        raise RuntimeError("device registration kept racing")  # pragma: no cover - two losses in a row

    async def _evict(self, user_id: str, limit: int) -> None:
        devices = await self.col.find({"user_id": user_id}, {"_id": 1}).sort(
            [("created_at", ASCENDING), ("_id", ASCENDING)]).to_list(None)
        if len(devices) > limit:
            await self.col.delete_many({"_id": {"$in": [d["_id"] for d in devices[:len(devices) - limit]]}})

    async def of_user(self, user_id: str) -> list[dict]:
        return await self.col.find({"user_id": user_id}).sort([("created_at", ASCENDING), ("_id", ASCENDING)]).to_list(None)

    async def of_users(self, user_ids: list[str]) -> dict[str, list[dict]]:
        """`of_user` for many users in one query (by the `by_user` index): user id → devices."""
        found: dict[str, list[dict]] = {user_id: [] for user_id in user_ids}
        cursor = self.col.find({"user_id": {"$in": user_ids}}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        async for device in cursor:
            found[device["user_id"]].append(device)
        return found

    async def remove(self, user_id: str, device_id: str) -> bool:
        """Only the user's own: False when they have no such device."""
        result = await self.col.delete_one({"_id": device_id, "user_id": user_id})
        return result.deleted_count == 1

    async def remove_dead(self, devices: list[dict]) -> None:
        """Tokens a provider called dead; a token re-registered meanwhile (new id) stays."""
        if devices:
            await self.col.delete_many({"_id": {"$in": [d["_id"] for d in devices]},
                                        "token": {"$in": [d["token"] for d in devices]}})
