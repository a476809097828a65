"""The outbox relay: publishes the events stored in order and product documents to Kafka,
then removes them from the document; and the events accepted over HTTP (the `outbox`
collection, hub/stores/outbox.py: one per document, any topic), deleting each once published.
It reads and removes them through the stores (hub/stores/document_outbox.py), registered once built.
Those the request publishes itself at once (`publisher`), so what was answered 202 is on
Kafka before the caller's next request, in order; only if that fails does the relay retry.

Writers call `notify(collection)(doc_id)` after a change, so events normally go out within
milliseconds. A scan every RECOVERY_S seconds (and one at start) finds what a process that
died left unpublished. An event can therefore be published twice (crash after the publish,
before the removal), always with the same id; consumers deduplicate by id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import NamedTuple

from domain.events import TOPIC_OF_PREFIX
from domain.products import inventory_events
from hub.wiring.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED

log = logging.getLogger(__name__)

RECOVERY_S = 60.0
PUBLISH_WAIT_S = 2.0  # how long a request waits on Kafka before leaving its event to the relay
CONCURRENCY = 64


class _Record(NamedTuple):
    """One event as it goes to Kafka."""
    id: str
    topic: str
    key: str  # the aggregate id
    value: str  # the event's JSON
    signed: bool  # carries the hub's signature (a service's event never does)


def _stored(topic: str):
    """(topic, renderer) for entries holding one of the hub's own events, all for `topic`."""
    def render(doc: dict, source: str) -> list[_Record]:
        return [_Record(entry["event"]["id"], topic, entry["key"], json.dumps(entry["event"]), True)
                for entry in doc.get("outbox", [])]
    return topic, render


def _inventory(doc: dict, source: str) -> list[_Record]:
    return [_Record(event["id"], "inventory", doc["_id"], json.dumps(event), True)
            for event in inventory_events(doc, source)]


def _requested(doc: dict, source: str) -> list[_Record]:
    """Events accepted over HTTP (hub/stores/outbox.py), stored as the JSON they go out as,
    each naming its topic."""
    return [_Record(entry["id"], entry["topic"], entry["key"], entry["value"], entry["signed"])
            for entry in doc["outbox"]]


REQUESTED = "outbox"
# Each collection's topic (None: each entry names its own) and how its documents' outbox
# entries become records; its store removes those published.
_RENDERERS = {
    "orders": _stored("orders"),
    "payments": _stored("payments"),
    "points_accounts": _stored("points"),
    "coupons": _stored("orders"),
    "carts": _stored("orders"),
    "products": ("inventory", _inventory),
    REQUESTED: (None, _requested),
}


class OutboxRelay:
    def __init__(self, kafka, source: str) -> None:
        self.kafka = kafka
        self.source = source
        self._pending: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set, and replaced, each time nothing is left to publish
        self._task: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._stores: dict = {}

    def register(self, **stores) -> None:
        """The stores it publishes from, by collection: one for each of _RENDERERS.
        Registered after they are built, as they are built with `notify`."""
        self._stores.update(stores)

    def notify(self, collection: str):
        def mark(doc_id: str) -> None:
            self._pending.add((collection, doc_id))
            self._wake.set()
        return mark

    def publisher(self, collection: str):
        async def publish(doc_id: str) -> None:
            try:
                await asyncio.wait_for(self.publish(collection, doc_id), PUBLISH_WAIT_S)
            except Exception:  # noqa: BLE001 - it is stored: the relay publishes it once Kafka takes it
                log.warning("publish failed; the outbox relay retries it", exc_info=True)
                self.notify(collection)(doc_id)
        return publish

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def drained(self) -> None:
        """Returns once every event stored (and notified) before the call is on Kafka."""
        idle = self._idle
        self._wake.set()
        await idle.wait()

    async def stop(self) -> None:
        """Publish what is pending (bounded), then stop."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        try:
            await asyncio.wait_for(self._drain(), timeout=2)
        except Exception:  # noqa: BLE001 - whatever is left goes out after the next start
            log.warning("outbox not fully drained at shutdown; it will be published at the next start")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_scan = 0.0
        while True:
            try:
                if loop.time() >= next_scan:
                    await self._scan()
                    next_scan = loop.time() + RECOVERY_S
                await self._drain()
                self._wake.clear()
                if not self._pending:
                    idle, self._idle = self._idle, asyncio.Event()
                    idle.set()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_scan - loop.time()))
                    except asyncio.TimeoutError:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(1)

    async def _scan(self) -> None:
        found = dict.fromkeys([*(topic for topic, _ in _RENDERERS.values() if topic), *TOPIC_OF_PREFIX.values()], 0)
        for collection, (topic, _) in _RENDERERS.items():
            store = self._stores[collection]
            pending = (store.pending_topics() if topic is None
                       else ((doc_id, topic) async for doc_id in store.pending_ids()))
            async for doc_id, doc_topic in pending:
                self._pending.add((collection, doc_id))
                found[doc_topic] += 1
        # Normally near 0 (events leave within milliseconds); a count that stays up means
        # Kafka is not taking them (docs/deployment.md, alert HubOutboxBacklog).
        for topic, count in found.items():
            OUTBOX_BACKLOG.labels(topic).set(count)

    async def _drain(self) -> None:
        # A document notified again while its batch is in flight waits for the next round,
        # so one document is never published by two tasks at once.
        while self._pending:
            batch = self._pending
            self._pending = set()
            results = await asyncio.gather(*(self.publish(collection, doc_id) for collection, doc_id in batch),
                                           return_exceptions=True)
            failed = {item: result for item, result in zip(batch, results) if isinstance(result, Exception)}
            if failed:
                self._pending.update(failed)
                raise RuntimeError(f"outbox publish failed: {next(iter(failed.values()))!r}")

    async def publish(self, collection: str, doc_id: str) -> list[str]:
        """Publish one document's pending events, then remove them from it; their ids."""
        async with self._slots:
            store = self._stores[collection]
            doc = await store.outbox_of(doc_id)
            if doc is None:
                return []
            records = _RENDERERS[collection][1](doc, self.source)
            sends = []
            for record in records:
                value = record.value.encode()
                sends.append(await self.kafka.producer.send(
                    self.kafka.topic(record.topic), value, key=record.key.encode(),
                    headers=self.kafka.signer.headers(value) if record.signed else None))
            await asyncio.gather(*sends)
            await store.mark_published(doc_id, doc["outbox"])
            for record in records:
                OUTBOX_PUBLISHED.labels(record.topic).inc()
            return [record.id for record in records]
