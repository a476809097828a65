"""The `outbox` collection: events accepted over HTTP (POST /notifications, POST /events),
one per document, until the relay (hub/outbox.py) has published and deleted it. A 202 is
answered once the document is written, so the event goes out whether Kafka is up or not."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable


class OutboxStore:
    def __init__(self, db, notify: Callable[[str], None]) -> None:
        self.col = db["outbox"]
        self.notify = notify

    async def create_indexes(self) -> None:
        """None: the relay reads the whole (normally empty) collection."""

    async def add(self, topic: str, key: str, event: dict, *, signed: bool) -> None:
        """Stores `event` for `topic` under Kafka key `key`; `signed`: the hub's own event.
        Each call is one publication, as each request was when it went straight to Kafka."""
        doc_id = uuid.uuid4().hex
        # Kept as the JSON it goes out as: a service's data may hold keys MongoDB would refuse.
        entry = {"id": event["id"], "topic": topic, "key": key, "value": json.dumps(event), "signed": signed}
        await self.col.insert_one({"_id": doc_id, "outbox": [entry]})
        self.notify(doc_id)
