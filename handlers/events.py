"""POST /api/v1/events: a backend service puts a CloudEvent onto its topic."""

from __future__ import annotations

import json

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from domain.events import TOPIC_OF_PREFIX, InvalidEvent, check_cloud_event, topic_for
from handlers.base import ApiError, BaseHandler
from handlers.schemas import Body, EventData

Attribute = Annotated[str, Field(min_length=1, max_length=200)]


# What domain.events.check_cloud_event accepts, for the OpenAPI document (the handler checks
# with that function, whose error codes predate this model).
class CloudEventBody(Body):
    # CloudEvents extension attributes are allowed.
    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": {"type": "string"}})

    specversion: Literal["1.0"]
    id: Attribute
    source: Attribute
    type: Annotated[str, Field(max_length=200, pattern=rf"^({'|'.join(TOPIC_OF_PREFIX)})\.[a-z_.]+$")]
    subject: Attribute = None  # type: ignore[assignment]  # may be left out, never null
    time: Attribute = None  # type: ignore[assignment]
    datacontenttype: Literal["application/json"] = None  # type: ignore[assignment]
    data: EventData


class EventsHandler(BaseHandler):
    openapi = {"post": {"summary": "Publish a CloudEvent from a service (X-API-Key); it goes onto its topic",
                        "body": CloudEventBody, "status": 202, "auth": "service"}}

    async def post(self) -> None:
        caller = self.caller
        if caller is None or not caller.is_service:
            raise ApiError(401 if caller is None else 403, "service_key_required", "Send a service API key as X-API-Key.")
        try:
            event = check_cloud_event(self.json_body())
        except ValueError as exc:
            code = 422 if isinstance(exc, InvalidEvent) else 400
            raise ApiError(code, "invalid_event" if code == 422 else "malformed_json", f"Not a usable CloudEvent: {exc}.") from None
        if event["source"] == self.config.event_source:
            # Only the hub speaks as the hub: its events skip the state machine (docs/security.md).
            raise ApiError(422, "reserved_source", "This source is the hub's own; use your service's own source.",
                           [{"field": "source", "message": "reserved for the hub"}])
        prefix = event["type"].split(".", 1)[0]
        if prefix not in TOPIC_OF_PREFIX:
            raise ApiError(422, "unknown_event_type", f"No topic takes events of type {event['type']!r}.",
                           {"known_prefixes": sorted(TOPIC_OF_PREFIX)})
        data = event["data"]
        key = data.get("order_id") or data.get("product_id") or data.get("user_id") or event.get("subject") or event["id"]
        await self.services.kafka.producer.send_and_wait(
            self.services.kafka.topic(topic_for(event["type"])), json.dumps(event).encode(), key=str(key).encode())
        self.send({"id": event["id"], "topic": topic_for(event["type"])}, 202)
