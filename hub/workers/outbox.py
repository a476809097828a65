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

from domain.events import TOPIC_OF_PREFIX
from domain.products import inventory_events
from hub.wiring.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED

log = logging.getLogger(__name__)

RECOVERY_S = 60.0
PUBLISH_WAIT_S = 2.0  # how long a request waits on Kafka before leaving its event to the relay
CONCURRENCY = 64


def _stored_events(doc: dict, source: str) -> list[tuple[str, dict]]:
    return [(entry["key"], entry["event"]) for entry in doc.get("outbox", [])]


def _inventory_events(doc: dict, source: str) -> list[tuple[str, dict]]:
    return [(doc["_id"], event) for event in inventory_events(doc, source)]


# How each collection's outbox entries become (Kafka key, CloudEvent) pairs for one topic
# (its store removes those published). Keys are aggregate ids.
_RENDERERS = {
    "orders": ("orders", _stored_events),
    "payments": ("payments", _stored_events),
    "points_accounts": ("points", _stored_events),
    "coupons": ("orders", _stored_events),
    "carts": ("orders", _stored_events),
    "products": ("inventory", _inventory_events),
}
REQUESTED = "outbox"


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
        """The stores it publishes from, by collection: one for each of _RENDERERS, and REQUESTED's.
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
        found = dict.fromkeys([*(topic for topic, _ in _RENDERERS.values()), *TOPIC_OF_PREFIX.values()], 0)
        for collection, (topic, _) in _RENDERERS.items():
            async for doc_id in self._stores[collection].pending_ids():
                self._pending.add((collection, doc_id))
                found[topic] += 1
        async for doc_id, topic in self._stores[REQUESTED].pending_topics():
            self._pending.add((REQUESTED, doc_id))
            found[topic] += 1
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

    async def publish(self, collection: str, doc_id: str) -> list[dict]:
        """Publish one document's pending events, then remove them from it; the events."""
        async with self._slots:
            store = self._stores[collection]
            doc = await store.outbox_of(doc_id)
            if doc is None:
                return []
            if collection == REQUESTED:
                return [await self._publish_requested(store, doc)]
            topic, render = _RENDERERS[collection]
            events = render(doc, self.source)
            values = [(key, json.dumps(event).encode()) for key, event in events]
            sends = [await self.kafka.producer.send(self.kafka.topic(topic), value, key=key.encode(),
                                                    headers=self.kafka.signer.headers(value))
                     for key, value in values]
            await asyncio.gather(*sends)
            await store.mark_published(doc_id, doc["outbox"])
            OUTBOX_PUBLISHED.labels(topic).inc(len(events))
            return [event for _, event in events]

    async def _publish_requested(self, store, doc: dict) -> dict:
        """An event accepted over HTTP, stored as the JSON it goes out as; signed only when it is
        the hub's own (a service's event never carries the hub's signature)."""
        [entry] = doc["outbox"]
        value = entry["value"].encode()
        headers = self.kafka.signer.headers(value) if entry["signed"] else None
        await self.kafka.producer.send_and_wait(self.kafka.topic(entry["topic"]), value, key=entry["key"].encode(),
                                                headers=headers)
        await store.mark_published(doc["_id"], doc["outbox"])
        OUTBOX_PUBLISHED.labels(entry["topic"]).inc()
        return json.loads(value)
