"""What services ask the hub to publish (POST /api/v1/notifications, POST /api/v1/events).

Each is written to the outbox (hub/stores/outbox.py) before it is published, so a request
answered 202 is published even if the broker is down at that moment.
"""

from __future__ import annotations

import uuid

from domain.errors import Invalid, NotFound
from domain.events import MAX_ATTRIBUTE_LENGTH, TOPIC_OF_PREFIX, cloud_event, topic_for
from domain.notification_rules import notification_id

MAX_IDEMPOTENCY_KEY = 200
_REQUEST_NAMESPACE = uuid.UUID("0d7e3b55-8a4f-4b57-9d0e-6f2c1a9b7e44")


class ServiceEvents:
    def __init__(self, users, outbox, *, source: str) -> None:
        self.users = users
        self.outbox = outbox
        self.source = source

    async def request_notification(self, caller_id: str, idempotency_key: str | None, request: dict) -> str:
        """Publishes `notification.requested` for `request` (the fields of POST /notifications);
        the notification's id."""
        user_id = request["user_id"]
        if await self.users.get(user_id) is None:
            raise NotFound("No such user.", code="user_not_found")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise Invalid(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters.")
        # A retry with the same key is the same event, so the engine records it once.
        event_id = (uuid.uuid5(_REQUEST_NAMESPACE, f"{caller_id}\x00{idempotency_key}").hex if idempotency_key
                    else uuid.uuid4().hex)
        event = cloud_event("notification.requested", self.source, request, subject=user_id, event_id=event_id)
        await self.outbox.add(topic_for(event["type"]), user_id, event, signed=True)
        return notification_id(event_id, request["type"], user_id)

    async def publish(self, event: dict) -> str:
        """Publishes a service's own CloudEvent (already checked by domain.events.check_cloud_event)
        on its topic; the topic."""
        if event["source"] == self.source:
            # Only the hub speaks as the hub: its events skip the state machine (docs/security.md).
            raise Invalid("This source is the hub's own; use your service's own source.", code="reserved_source",
                          details=[{"field": "source", "message": "reserved for the hub"}])
        prefix = event["type"].split(".", 1)[0]
        if prefix not in TOPIC_OF_PREFIX:
            raise Invalid(f"No topic takes events of type {event['type']!r}.", code="unknown_event_type",
                          details={"known_prefixes": sorted(TOPIC_OF_PREFIX)})
        data = event["data"]
        # The aggregate's id keys the event (its partition, so its order) when the data names one
        # as a string of attribute length; anything else there is not a key: the subject or id then.
        ids = (data.get("order_id"), data.get("product_id"), data.get("user_id"))
        key = next((value for value in ids if isinstance(value, str) and 0 < len(value) <= MAX_ATTRIBUTE_LENGTH),
                   event.get("subject") or event["id"])
        topic = topic_for(event["type"])
        await self.outbox.add(topic, key, event, signed=False)
        return topic
