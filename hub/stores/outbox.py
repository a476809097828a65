"""The `outbox` collection: events accepted over HTTP (POST /notifications, POST /events),
one per document, until it is published and deleted (hub/workers/outbox.py). The request publishes
it at once, and the relay does if that fails, so a 202 holds whether Kafka is up or not."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from hub.stores.document_outbox import OutboxSource


class OutboxStore(OutboxSource):
    def __init__(self, db, publish: Callable[[str], Awaitable[None]]) -> None:
        self.col = db["outbox"]
        self.publish = publish  # the relay's: publishes the document now, or has it retried

    async def create_indexes(self) -> None:
        """None: the relay reads the whole (normally empty) collection."""

    async def add(self, topic: str, key: str, event: dict, *, signed: bool) -> None:
        """Stores `event` for `topic` under Kafka key `key`; `signed`: the hub's own event.
        Each call is one publication, as each request was when it went straight to Kafka."""
        doc_id = uuid.uuid4().hex
        # Kept as the JSON it goes out as: a service's data may hold keys MongoDB would refuse.
        entry = {"id": event["id"], "topic": topic, "key": key, "value": json.dumps(event), "signed": signed}
        await self.col.insert_one({"_id": doc_id, "outbox": [entry]})
        await self.publish(doc_id)

    async def pending_topics(self) -> AsyncIterator[tuple[str, str]]:
        """(id, topic) of each document: all are unpublished."""
        async for doc in self.col.find({}, {"outbox.topic": 1}):
            yield doc["_id"], doc["outbox"][0]["topic"]

    async def mark_published(self, doc_id: str, entries: list) -> None:
        """Deletes the document: its one entry is published."""
        await self.col.delete_one({"_id": doc_id})
