"""POST /api/v1/notifications and POST /api/v1/events answer 202 once the request is in the
outbox (hub/stores/outbox.py), not in Kafka: what is accepted while the broker cannot be reached
is published when it is back, and only once."""

from __future__ import annotations

import uuid

import pytest

from domain.service_events import ServiceEvents
from hub.adapters.kafka import Kafka
from tests.checkout_helpers import balance
from tests.conftest import SERVICE_KEY
from tests.notify_e2e import customer, eventually, inbox_item, request_notification

pytestmark = pytest.mark.timeout(60)


def _requested(events: list[dict], user_id: str) -> list[dict]:
    return [e for e in events if e["type"] == "notification.requested" and e["data"]["user_id"] == user_id]


async def test_requests_accepted_while_kafka_is_unreachable_are_published_once_when_it_is_back(hub_server, api, topics):
    hub = hub_server.hub
    ann, bob = await customer(api), await customer(api)
    await hub.kafka.producer.stop()  # from here on this hub cannot publish anything

    note = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "Hello",
                                            "body": "Sent while the broker was away"},
                                      {"Idempotency-Key": uuid.uuid4().hex})
    assert note.status == 202, note
    bonus = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/marketing", "type": "points.awarded",
             "data": {"user_id": ann.id, "delta": 25, "reason": "welcome bonus"}}
    r = await api.call("POST", "/api/v1/events", bonus, headers={"X-API-Key": SERVICE_KEY})
    assert r.status == 202 and r.data == {"id": bonus["id"], "topic": "points"}, r
    assert not _requested(await topics.read("notifications", timeout=1.0), ann.id)

    back = Kafka(hub.settings, hub.kafka.bootstrap_servers)  # the broker is reachable again
    await back.producer.start()
    hub.kafka.producer = back.producer
    assert (await inbox_item(api, ann.token, note.data["id"]))["title"] == "Hello"
    await eventually(lambda: balance(api, ann.token), what="points credited")  # truthy once credited
    assert await balance(api, ann.token) == 25

    # A restarted relay publishes nothing again: once a later request is out, its first scan is done.
    await hub.relay.stop()
    hub.relay.start()
    later = await request_notification(api, {"user_id": bob.id, "type": "order_note", "title": "Later", "body": "b"})
    assert later.status == 202, later
    notes = await topics.read("notifications", until=lambda events: _requested(events, bob.id))
    assert len(_requested(notes, ann.id)) == 1
    points = await topics.read("points", until=lambda events: any(e["id"] == bonus["id"] for e in events))
    assert [e["id"] for e in points].count(bonus["id"]) == 1
    assert await hub.db["outbox"].count_documents({}) == 0


class _Outbox:
    def __init__(self) -> None:
        self.added: list[tuple] = []

    async def add(self, topic: str, key: str, event: dict, *, signed: bool) -> None:
        self.added.append((topic, key, signed))


@pytest.mark.parametrize("data,key", [
    ({"order_id": "o-1", "user_id": "u-1"}, "o-1"),
    ({"order_id": {"not": "an id"}, "user_id": "u-1"}, "u-1"),
    ({"order_id": "o" * 257}, "the-subject"),
    ({"order_id": ["o-1"]}, "the-subject"),
])
async def test_a_service_event_is_keyed_by_its_aggregate_id_only_when_that_is_a_bounded_string(data, key):
    """Another service's data is not trusted as a Kafka key of any shape or size."""
    outbox = _Outbox()
    event = {"specversion": "1.0", "id": "e-1", "source": "/other", "type": "order.shipped", "subject": "the-subject",
             "data": data}
    assert await ServiceEvents(None, outbox, source="/hub").publish(event) == "orders"
    assert outbox.added == [("orders", key, False)]
