"""The `refresh_tokens` collection: one document per issued refresh token, keyed by its
SHA-256 digest, grouped in families (one family per sign-in)."""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument


class RefreshTokenStore:
    def __init__(self, db) -> None:
        self.col = db["refresh_tokens"]

    async def create_indexes(self) -> None:
        await self.col.create_index("family", name="family")
        # Expired tokens are useless; let MongoDB delete them.
        await self.col.create_index("expires_at", expireAfterSeconds=0, name="expires_ttl")

    async def insert(self, *, digest: str, user_id: str, family: str, created_at: datetime, expires_at: datetime) -> None:
        await self.col.insert_one({
            "_id": digest, "user_id": user_id, "family": family, "created_at": created_at,
            "expires_at": expires_at, "used_at": None, "revoked": False,
        })

    async def consume(self, digest: str, now: datetime) -> dict | None:
        """Mark a live token used, atomically: of two racing refreshes only one wins."""
        return await self.col.find_one_and_update(
            {"_id": digest, "used_at": None, "revoked": False, "expires_at": {"$gt": now}},
            {"$set": {"used_at": now}},
            return_document=ReturnDocument.AFTER,
        )

    async def get(self, digest: str) -> dict | None:
        return await self.col.find_one({"_id": digest})

    async def revoke_family(self, family: str) -> None:
        await self.col.update_many({"family": family}, {"$set": {"revoked": True}})
