"""GET and PUT /api/v1/users/me/preferences (CONTRACT §2 "Notifications")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt

from domain.notification_policy import effective_preferences
from handlers.base import BaseHandler
from handlers.schemas import Body, Timezone

# A notification type (`order.shipped`), a category (`order`) or `all`.
TypeName = Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_]+)*$", max_length=64)]
ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class ChannelPreference(Body):
    enabled: StrictBool
    types: Annotated[list[TypeName], Field(max_length=50)] = ["all"]


class ChannelPreferences(Body):
    email: ChannelPreference = None  # type: ignore[assignment]  # left out: the default
    sms: ChannelPreference = None  # type: ignore[assignment]
    push: ChannelPreference = None  # type: ignore[assignment]
    websocket: ChannelPreference = None  # type: ignore[assignment]


class DndPreference(Body):
    enabled: StrictBool
    start: ClockTime = "22:00"
    end: ClockTime = "08:00"
    timezone: Timezone | None = None
    urgent_bypass: StrictBool = True


class FrequencyPreference(Body):
    max_per_hour: Annotated[StrictInt, Field(ge=0, le=10_000)] = 10
    max_per_day: Annotated[StrictInt, Field(ge=0, le=100_000)] = 50


class PreferencesBody(Body):
    channels: ChannelPreferences = None  # type: ignore[assignment]
    dnd: DndPreference = None  # type: ignore[assignment]
    frequency: FrequencyPreference = None  # type: ignore[assignment]


class PreferencesHandler(BaseHandler):
    openapi = {
        "get": {"summary": "The caller's notification preferences (defaults where unset)", "auth": "user"},
        "put": {"summary": "Replace notification preferences; sections or channels left out keep their defaults",
                "body": PreferencesBody, "auth": "user"},
    }

    async def get(self) -> None:
        caller = self.require_user()
        self.send(effective_preferences((await self.services.accounts.user(caller.id)).get("preferences")))

    async def put(self) -> None:
        caller = self.require_user()
        body = self.parse(PreferencesBody)
        # What was sent, each part whole (a channel sent without `types` gets ["all"]).
        stored = {section: getattr(body, section).model_dump() for section in ("dnd", "frequency")
                  if section in body.model_fields_set}
        if "channels" in body.model_fields_set:
            stored["channels"] = {name: getattr(body.channels, name).model_dump() for name in body.channels.model_fields_set}
        user = await self.services.accounts.update_profile(caller.id, {"preferences": stored})
        self.send(effective_preferences(user.get("preferences")))
