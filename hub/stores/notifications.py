"""The `notifications` collection (each user's inbox, with a delivery log per channel)
and `notification_jobs` (one small document per notification with work left: a delivery
to send, retry or release). Jobs live apart so that finding due work never scans the
inbox, however large it grows."""

from __future__ import annotations

import os
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, DeleteMany, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

MAX_PAGE = 100


class NotificationStore:
    def __init__(self, db) -> None:
        self.col = db["notifications"]
        self.jobs = db["notification_jobs"]

    async def create_indexes(self) -> None:
        await self.col.create_index([("user_id", ASCENDING), ("created_at", DESCENDING)], name="inbox")
        await self.col.create_index([("user_id", ASCENDING), ("read_at", ASCENDING)], name="unread")
        await self.jobs.create_index("due_at", name="due")

    async def insert(self, doc: dict, *, due_at: datetime | None) -> bool:
        """Stores a new notification and, when it has work left, its job (first, so that
        a crash in between leaves a job that finds nothing rather than work without a job).
        False if the notification was already stored (a duplicate event)."""
        created_job = False
        if due_at is not None:
            try:
                await self.jobs.insert_one({"_id": doc["_id"], "due_at": due_at, "held": False})
                created_job = True
            except DuplicateKeyError:
                pass  # the notification exists and still has work: its job stands
        try:
            await self.col.insert_one(doc)
            return True
        except DuplicateKeyError:
            if created_job:
                await self.jobs.delete_one({"_id": doc["_id"]})
            return False

    async def insert_many(self, docs: list[dict], *, due_at: datetime, pending: set[str]) -> set[str]:
        """`insert` for a batch, in two bulk writes: the jobs of the `pending` ones (first,
        as above), then the notifications. Returns the ids stored now (not duplicates)."""
        created_jobs = await _insert_new(self.jobs, [{"_id": d["_id"], "due_at": due_at, "held": False}
                                                     for d in docs if d["_id"] in pending])
        stored = await _insert_new(self.col, docs)
        stale = [nid for nid in created_jobs if nid not in stored]
        if stale:
            await self.jobs.delete_many({"_id": {"$in": stale}})
        return stored

    async def get(self, notification_id: str) -> dict | None:
        return await self.col.find_one({"_id": notification_id})

    async def many(self, notification_ids: list[str], *, whole: bool = False) -> list[dict]:
        """The notifications with these ids that exist (only their deliveries unless `whole`)."""
        projection = None if whole else {"deliveries": 1}
        return await self.col.find({"_id": {"$in": notification_ids}}, projection).to_list(None)

    async def owned(self, user_id: str, notification_id: str) -> dict | None:
        return await self.col.find_one({"_id": notification_id, "user_id": user_id})

    async def inbox(self, user_id: str, *, unread: bool | None, limit: int, before: datetime | None) -> list[dict]:
        query: dict = {"user_id": user_id}
        if unread is not None:
            query["read_at"] = None if unread else {"$ne": None}
        if before is not None:
            query["created_at"] = {"$lt": before}
        cursor = self.col.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(min(limit, MAX_PAGE))
        return await cursor.to_list(None)

    async def unread_count(self, user_id: str) -> int:
        return await self.col.count_documents({"user_id": user_id, "read_at": None})

    async def mark_read(self, user_id: str, notification_id: str, at: datetime) -> dict | None:
        """Marks it read (once: a second read keeps the first time); None if not the user's."""
        await self.col.update_one({"_id": notification_id, "user_id": user_id, "read_at": None}, {"$set": {"read_at": at}})
        return await self.owned(user_id, notification_id)

    async def mark_all_read(self, user_id: str, at: datetime) -> int:
        result = await self.col.update_many({"user_id": user_id, "read_at": None}, {"$set": {"read_at": at}})
        return result.modified_count

    async def update_deliveries(self, updates: dict[str, tuple[dict[str, dict], dict[str, str]]]) -> dict[str, list[str]]:
        """For each notification id, (new deliveries by channel, the status each is expected to
        have): replaces each channel's delivery if its status is still the expected one
        (compare-and-set). Returns, per notification, the channels replaced. One bulk write
        when nothing moved meanwhile (the usual case); else the notifications it missed are
        written one channel at a time. Each delivery carries the write's random id, so that
        a read tells which notifications the bulk write changed (its answer only counts them)."""
        updates = {nid: update for nid, update in updates.items() if update[0]}
        if not updates:
            return {}
        write = os.urandom(8).hex()

        def replace(nid: str, channels) -> UpdateOne:
            deliveries, expected = updates[nid]
            return UpdateOne({"_id": nid, **{f"deliveries.{c}.status": expected[c] for c in channels}},
                             {"$set": {f"deliveries.{c}": dict(deliveries[c], write=write) for c in channels}})

        result = await self.col.bulk_write([replace(nid, list(update[0])) for nid, update in updates.items()],
                                           ordered=False)
        applied = {nid: list(update[0]) for nid, update in updates.items()}
        if result.matched_count == len(updates):
            return applied
        async for doc in self.col.find({"_id": {"$in": list(updates)}}, {"deliveries": 1}):
            if not any(d.get("write") == write for d in doc["deliveries"].values()):
                applied[doc["_id"]] = [c for c in updates[doc["_id"]][0]
                                       if (await self.col.bulk_write([replace(doc["_id"], [c])])).matched_count == 1]
        return applied

    async def advance_delivery(self, notification_id: str, channel: str, status: str, lower: list[str],
                               fields: dict, *, user_id: str | None = None) -> dict | None:
        """Moves a channel's delivery to `status` only from one of the `lower` statuses (so
        out-of-order provider callbacks never move it back), and only the user's own when
        `user_id` is given. The document after, or None."""
        changes = {f"deliveries.{channel}.status": status, **{f"deliveries.{channel}.{k}": v for k, v in fields.items()}}
        owner = {} if user_id is None else {"user_id": user_id}
        return await self.col.find_one_and_update(
            {"_id": notification_id, **owner, f"deliveries.{channel}.status": {"$in": lower}}, {"$set": changes},
            return_document=ReturnDocument.AFTER)

    # Jobs ------------------------------------------------------------------------------
    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        cursor = self.jobs.find({"due_at": {"$lte": now}}, {"_id": 1}).sort("due_at", ASCENDING).limit(limit)
        return [job["_id"] async for job in cursor]

    async def claim(self, notification_id: str, now: datetime, lease_until: datetime) -> bool:
        """One process wins a due job: it moves the job's time past the lease."""
        result = await self.jobs.update_one({"_id": notification_id, "due_at": {"$lte": now}},
                                            {"$set": {"due_at": lease_until}})
        return result.modified_count == 1

    async def set_jobs(self, jobs: dict[str, tuple[datetime | None, bool]]) -> None:
        """Notification id → (the next time it needs work, whether it is held): one bulk
        write; no job for those with no work left."""
        done = [nid for nid, (due_at, _) in jobs.items() if due_at is None]
        writes = [DeleteMany({"_id": {"$in": done}})] if done else []
        writes += [UpdateOne({"_id": nid}, {"$set": {"due_at": due_at, "held": held}}, upsert=True)
                   for nid, (due_at, held) in jobs.items() if due_at is not None]
        if writes:
            await self.jobs.bulk_write(writes, ordered=False)

    async def held_count(self) -> int:
        return await self.jobs.count_documents({"held": True})


async def _insert_new(collection, docs: list[dict]) -> set[str]:
    """Inserts what is not stored yet (one bulk write); the ids inserted."""
    if not docs:
        return set()
    try:
        await collection.insert_many(docs, ordered=False)
        return {d["_id"] for d in docs}
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        duplicates = {e["index"] for e in errors}
        return {d["_id"] for i, d in enumerate(docs) if i not in duplicates}
