"""The `login_failures` collection: failed sign-ins in a row per account (its email, known
or not) and client address, and the lock they lead to. MongoDB deletes a document once it
is stale (TTL index), so an attacker's failures cost bounded space."""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError


def _key(email: str, client: str) -> str:
    return f"{email} {client}"


class LoginFailureStore:
    def __init__(self, db) -> None:
        self.col = db["login_failures"]

    async def create_indexes(self) -> None:
        await self.col.create_index("expires_at", expireAfterSeconds=0, name="expires_ttl")

    async def get(self, email: str, client: str) -> dict | None:
        return await self.col.find_one({"_id": _key(email, client)})

    async def record_failure(self, email: str, client: str, max_failures: int, until: datetime) -> bool:
        """Count one failure atomically (remembered until `until`); at `max_failures` in a
        row, lock the pair until `until`. True if this call locked it."""
        key = _key(email, client)
        try:  # created first rather than upserted: concurrent upserts of one _id race
            await self.col.insert_one({"_id": key, "email": email, "client": client, "failures": 0,
                                       "locked_until": None, "expires_at": until})
        except DuplicateKeyError:
            pass
        doc = await self.col.find_one_and_update(
            {"_id": key}, {"$inc": {"failures": 1}, "$set": {"expires_at": until}}, return_document=ReturnDocument.AFTER)
        if doc is None or doc["failures"] < max_failures:
            return False
        result = await self.col.update_one({"_id": key, "failures": {"$gte": max_failures}},
                                           {"$set": {"locked_until": until, "failures": 0}})
        return result.modified_count == 1

    async def clear(self, email: str, client: str) -> None:
        """A successful sign-in: the failures in a row from there start again at zero."""
        await self.col.delete_one({"_id": _key(email, client)})
