"""POST /api/v1/events: a backend service puts a CloudEvent onto its topic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from domain.events import TOPIC_OF_PREFIX, InvalidEvent, check_cloud_event
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
        topic = await self.services.service_events.publish(event)
        self.send({"id": event["id"], "topic": topic}, 202)
