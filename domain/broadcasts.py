"""Broadcasts: one request reaches a whole audience, each recipient by their own rules
(CONTRACT v2 §5 "Audiences and broadcasts"; docs/notifications.md).

1. `create` stores the broadcast (its id derives from the caller and the Idempotency-Key,
   so a retried request is the same broadcast) and wakes the expander.
2. The expander (every process runs one; a lease lets one at a time work on a broadcast)
   reads the audience a page at a time (a topic's members, a list of users, or every user)
   and publishes each page as one `broadcast.batch` event on the `broadcasts` topic, moving
   the broadcast's cursor on after each. A process that dies mid-way leaves its lease to
   run out; another takes up from the cursor (a page published twice is harmless, below).
3. The `hub-broadcasts` consumer group (every process) handles the batches: the page's
   users are read in one query, their notifications built by the ordinary rules
   (preferences, DND, caps, expiry) and stored in one bulk write, each with a stable id
   per (broadcast, user), so a redelivered batch stores nothing twice and sends nothing
   twice; the new ones are dispatched at once with bounded concurrency. Then the page is
   counted into the broadcast's progress, once (hub/stores/broadcasts.py).
4. Deliveries that move on later (held ones released, retries) are added to the counts
   every POLL_S. `cancel` stops expansion and makes every batch not handled yet skip its
   recipients (counted as `skipped`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable

from domain.errors import Conflict, Invalid, NotFound
from domain.events import Rejected, cloud_event
from domain.notification_rules import Planned, Rule

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
EXPANSION_LEASE = timedelta(seconds=30)
POLL_S = 1.0
PROGRESS_EVERY_S = 0.5  # progress frames to admins, per broadcast and process, at most this often
MAX_BATCH_IDS = 10_000  # a batch event naming more users is not ours
READ_BATCHES = 10  # the audience is read this many batches at a time (up to MAX_BATCH_IDS ids)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAMESPACE = uuid.UUID("3c1f0a7e-52a4-4d8b-a0b6-9e5f1c2d7a31")


class Broadcasts:
    def __init__(self, store, topics, users, notifier, notification_store, *, publish: Callable[[dict], Awaitable],
                 source: str, batch_size: int, concurrency: int, clock: Callable[[], datetime],
                 on_processed: Callable[[str, int], None] = lambda outcome, n: None,
                 on_progress: Callable[[dict], Awaitable] | None = None) -> None:
        self.store = store
        self.topics = topics
        self.users = users
        self.notifier = notifier
        self.notification_store = notification_store
        self.publish = publish  # (CloudEvent) → on the `broadcasts` topic
        self.source = source
        self.batch_size = batch_size
        self.slots = asyncio.Semaphore(concurrency)  # notifications sending at once
        self.clock = clock
        self.on_processed = on_processed
        self.on_progress = on_progress  # (public broadcast) → admins' live view
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._first_round: set[str] = set()  # notifications a batch is dispatching: counted with their page
        self._moves: dict[str, Counter] = defaultdict(Counter)  # later delivery moves, not yet counted
        self._progress_at: dict[str, float] = {}
        self._progress_later: dict[str, dict] = {}

    # Requests ----------------------------------------------------------------------------
    async def create(self, caller_id: str, key: str | None, request: dict) -> tuple[dict, bool]:
        """The broadcast and whether it is new. The same key with another request → 422."""
        bid = uuid.uuid5(_NAMESPACE, f"{caller_id}\x00{key}").hex if key else uuid.uuid4().hex
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
        existing = await self.store.get(bid)
        if existing is None:
            audience, estimate = await self._audience(request["audience"])
            now = self.clock()
            doc = {
                "_id": bid, "created_by": caller_id, "request_hash": digest, "audience": audience,
                "audience_summary": {"user_ids": len(audience["user_ids"])} if "user_ids" in audience else audience,
                "notification": {name: request.get(name) for name in (
                    "type", "category", "title", "body", "data", "channels", "priority", "expires_after_s")},
                "status": QUEUED, "estimate": estimate, "recipients": 0, "processed": 0, "skipped": 0,
                "counts": {}, "pages": 0, "cursor": None, "expanded": False, "done_pages": [],
                "lease_until": _EPOCH, "lease_owner": None, "created_at": now, "finished_at": None,
            }
            if await self.store.insert(doc) is not None:
                self._wake.set()
                return doc, True
            existing = await self.store.get(bid)  # a concurrent retry stored it first
        if existing["request_hash"] != digest:
            raise Invalid("This Idempotency-Key was used for another broadcast.", code="idempotency_key_reused")
        return existing, False

    async def _audience(self, audience: dict) -> tuple[dict, int]:
        """The audience as stored, and how many recipients it has now."""
        if "topic" in audience:
            if await self.topics.get(audience["topic"]) is None:
                raise NotFound("No such topic.", code="topic_not_found")
            return {"topic": audience["topic"]}, await self.topics.count(audience["topic"])
        if "user_ids" in audience:
            known = sorted(await self.users.existing(list(dict.fromkeys(audience["user_ids"]))))
            return {"user_ids": known}, len(known)
        return {"all": True}, await self.users.count()

    async def recent(self, limit: int = 50) -> list[dict]:
        return await self.store.recent(limit)

    async def get(self, broadcast_id: str) -> dict:
        doc = await self.store.get(broadcast_id)
        if doc is None:
            raise NotFound("No such broadcast.", code="broadcast_not_found")
        return doc

    async def cancel(self, broadcast_id: str) -> dict:
        doc = await self.get(broadcast_id)
        if doc["status"] == DONE:
            raise Conflict("The broadcast has finished.", code="broadcast_finished")
        doc = await self.store.cancel(broadcast_id, self.clock())
        await self._progress(doc, force=True)
        return doc

    # Expansion ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="broadcast-expander")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.flush_moves()
        except Exception:  # noqa: BLE001 - counts of later moves only; the deliveries themselves are stored
            log.warning("broadcast counts not flushed at shutdown", exc_info=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.flush_moves()
                for doc in list(self._progress_later.values()):
                    await self._progress(doc, force=True)
                for broadcast_id in await self.store.to_expand(self.clock(), 10):
                    await self.expand(broadcast_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("broadcast expansion failed; will try again")
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def expand(self, broadcast_id: str) -> None:
        """Publishes the rest of the broadcast's audience as batches, while the lease is ours.
        The audience is read READ_BATCHES batches at a time (one query), then published."""
        owner, now = uuid.uuid4().hex, self.clock()
        doc = await self.store.claim(broadcast_id, owner, now, now + EXPANSION_LEASE)
        if doc is None:
            return
        if doc["status"] not in (QUEUED, RUNNING):
            await self.store.stop_expanding(broadcast_id)
            return
        audience, cursor, page = doc["audience"], doc["cursor"], doc["pages"]
        while True:
            ids, cursor, last = await self._page(audience, cursor)
            batches = [ids[i:i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
            # Published together; a process that dies before the cursor moves leaves them to be
            # published again, with the same page numbers: their batches count once.
            await asyncio.gather(*(self.publish(cloud_event(
                "broadcast.batch", self.source, {"broadcast_id": broadcast_id, "page": page + n, "user_ids": batch},
                event_id=f"{broadcast_id}-{page + n}")) for n, batch in enumerate(batches)))
            doc = await self.store.expanded_page(broadcast_id, owner, cursor, len(ids), len(batches),
                                                 self.clock() + EXPANSION_LEASE, last=last)
            if doc is None or doc["status"] == CANCELLED:
                return  # the lease went to another process, or the broadcast was cancelled
            if last:
                await self._maybe_finish(doc)
                return
            page += len(batches)

    async def _page(self, audience: dict, cursor) -> tuple[list[str], object, bool]:
        """The next user ids (READ_BATCHES batches' worth), the cursor after them, and
        whether they are the last."""
        size = min(MAX_BATCH_IDS, self.batch_size * READ_BATCHES)
        if "user_ids" in audience:
            start = cursor or 0
            ids = audience["user_ids"][start:start + size]
            return ids, start + len(ids), start + size >= len(audience["user_ids"])
        if "topic" in audience:
            ids = await self.topics.page(audience["topic"], cursor, size)
        else:
            ids = await self.users.page(cursor, size)
        return ids, ids[-1] if ids else cursor, len(ids) < size

    # Batches (consumer group hub-broadcasts) -------------------------------------------
    async def handle_batch(self, event: dict) -> None:
        data = event["data"]
        broadcast_id, page, ids = data.get("broadcast_id"), data.get("page"), data.get("user_ids")
        if (event["type"] != "broadcast.batch" or not isinstance(broadcast_id, str) or not isinstance(page, int)
                or not isinstance(ids, list) or len(ids) > MAX_BATCH_IDS or not all(isinstance(i, str) for i in ids)):
            raise Rejected("not a broadcast batch")
        doc = await self.store.get_light(broadcast_id)
        if doc is None:
            raise Rejected(f"unknown broadcast {broadcast_id!r}")
        if await self.store.page_counted(broadcast_id, page):
            return  # a redelivered batch that was handled in full
        if doc["status"] == CANCELLED:
            after = await self.store.page_done(broadcast_id, page, processed=0, skipped=len(ids), counts={})
            if after is not None:
                self.on_processed("skipped", len(ids))
                await self._progress(after)
            return
        counts = await self._notify(doc, ids)
        after = await self.store.page_done(broadcast_id, page, processed=len(ids), skipped=0, counts=counts)
        if after is not None:
            self.on_processed("processed", len(ids))
            if not await self._maybe_finish(after):
                await self._progress(after)

    async def _notify(self, doc: dict, ids: list[str]) -> Counter:
        """Each user's notification, stored and dispatched; the page's deliveries by status."""
        spec = doc["notification"]
        planned = Planned(Rule(spec["type"], spec["category"], spec["priority"],
                               expires_after_s=spec.get("expires_after_s")),
                          spec["title"], spec["body"], tuple(spec["channels"]))
        event = {"id": f"broadcast:{doc['_id']}", "type": "notification.requested",
                 "data": {"data": spec.get("data") or {}}}
        built, stored = await self.notifier.record_batch(event, planned, await self.users.many(ids),
                                                         {"broadcast_id": doc["_id"]})
        fresh = [d["_id"] for d, _ in built if d["_id"] in stored and self.notifier.is_fresh(d["_id"])]
        self._first_round.update(fresh)
        try:
            await self.notifier.process_many(fresh, self.slots)
        finally:
            self._first_round.difference_update(fresh)
        counts: Counter = Counter()
        earlier = [d["_id"] for d, _ in built if d["_id"] not in stored]  # stored by an earlier try of this batch
        now_stored = [d for d, _ in built if d["_id"] in stored]
        for notification in now_stored + (await self.notification_store.many(earlier) if earlier else []):
            for channel, delivery in notification["deliveries"].items():
                counts[(channel, delivery["status"])] += 1
        return counts

    def delivery_moved(self, doc: dict, moves: dict[str, tuple[str, str]]) -> None:
        """The notifier's report of a broadcast notification's deliveries moving on."""
        if doc["_id"] in self._first_round:
            return  # counted with its page
        counter = self._moves[doc["broadcast_id"]]
        for channel, (before, after) in moves.items():
            counter[(channel, before)] -= 1
            counter[(channel, after)] += 1

    async def flush_moves(self) -> None:
        moves, self._moves = self._moves, defaultdict(Counter)
        for broadcast_id, counts in moves.items():
            after = await self.store.add_counts(broadcast_id, counts)
            if after is not None:
                await self._progress(after)

    async def _maybe_finish(self, doc: dict) -> bool:
        if (doc["expanded"] and doc["status"] in (QUEUED, RUNNING)
                and doc["processed"] + doc["skipped"] >= doc["recipients"]):
            if await self.store.finish(doc["_id"], self.clock()):
                await self._progress(await self.store.get_light(doc["_id"]), force=True)
                return True
        return False

    async def _progress(self, doc: dict | None, *, force: bool = False) -> None:
        if doc is None or self.on_progress is None:
            return
        now = asyncio.get_running_loop().time()
        if not force and now - self._progress_at.get(doc["_id"], 0.0) < PROGRESS_EVERY_S:
            self._progress_later[doc["_id"]] = doc  # the latest state goes out with the next POLL_S round
            return
        self._progress_later.pop(doc["_id"], None)
        self._progress_at[doc["_id"]] = now
        if len(self._progress_at) > 1000:
            self._progress_at.clear()
        try:
            await self.on_progress(public_broadcast(doc))
        except Exception:  # noqa: BLE001 - the live view is a convenience; GET has the truth
            log.warning("broadcast progress not published", exc_info=True)


def public_broadcast(doc: dict) -> dict:
    """A broadcast as GET /api/v1/broadcasts/{id} shows it (CONTRACT v2 §5)."""
    recipients = doc["recipients"] if doc["expanded"] else max(doc["recipients"], doc.get("estimate", 0))
    spec = doc["notification"]
    return {
        "id": doc["_id"], "status": doc["status"], "recipients": recipients, "processed": doc["processed"],
        "skipped": doc.get("skipped", 0),
        # A later move takes one from the status it leaves: a status left at 0 is not shown.
        "counts": {channel: {status: n for status, n in by_status.items() if n}
                   for channel, by_status in (doc.get("counts") or {}).items() if any(by_status.values())},
        "created_at": doc["created_at"].isoformat(),
        "finished_at": doc["finished_at"].isoformat() if doc.get("finished_at") else None,
        "audience": doc["audience_summary"],
        "type": spec["type"], "category": spec["category"], "title": spec["title"], "channels": spec["channels"],
    }
