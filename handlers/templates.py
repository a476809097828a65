"""Admin: list and replace notification templates (domain/notification_templates)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from domain.errors import NotFound
from domain.notification_templates import DEFAULTS, FALLBACK_LOCALE, PARTS
from handlers.base import ApiError, BaseHandler
from handlers.schemas import Body, Locale


class LocaleQuery(Body):
    locale: Locale = FALLBACK_LOCALE


class TemplateBody(Body):
    locale: Locale = FALLBACK_LOCALE
    subject: Annotated[str, Field(max_length=20_000)] | None = None
    text: Annotated[str, Field(max_length=20_000)] | None = None
    html: Annotated[str, Field(max_length=20_000)] | None = None
    title: Annotated[str, Field(max_length=20_000)] | None = None
    body: Annotated[str, Field(max_length=20_000)] | None = None


def _channel(channel: str) -> str:
    if channel not in PARTS:
        raise NotFound(f"No channel {channel!r}; channels are {', '.join(PARTS)}.", code="unknown_channel")
    return channel


class TemplatesHandler(BaseHandler):
    openapi = {"get": {"summary": "Every notification type's template per channel (default or override), admin",
                       "auth": "admin"}}

    async def get(self) -> None:
        self.require_admin()
        templates = self.services.templates
        overrides = await templates.overrides()
        types = sorted(set(DEFAULTS) | {t for t, _, _ in overrides})
        items = []
        for notification_type in types:
            for channel in PARTS:
                parts, source = await templates.parts_for(notification_type, channel, FALLBACK_LOCALE)
                items.append({"type": notification_type, "channel": channel, "locale": FALLBACK_LOCALE,
                              "source": source, "parts": parts})
        items += [{"type": t, "channel": c, "locale": loc, "source": f"override:{loc}",
                   "parts": (await templates.parts_for(t, c, loc))[0]}
                  for t, c, loc in sorted(overrides) if loc != FALLBACK_LOCALE]
        self.send({"items": items})


class TemplateHandler(BaseHandler):
    openapi = {
        "get": {"summary": "The template a type uses on a channel (?locale=, falling back to en), admin",
                "query": LocaleQuery, "auth": "admin"},
        "put": {"summary": "Replace a type's template on a channel for a locale (Jinja2, sandboxed); "
                          "email: subject, text, html; sms: text; push and websocket: title, body; "
                          "invalid Jinja → 422", "body": TemplateBody, "auth": "admin"},
        "delete": {"summary": "Remove an override: the shipped default applies again, admin", "status": 204,
                   "query": LocaleQuery, "auth": "admin"},
    }

    async def get(self, notification_type: str, channel: str) -> None:
        self.require_admin()
        locale = self.parse_query(LocaleQuery).locale
        parts, source = await self.services.templates.parts_for(notification_type, _channel(channel), locale)
        self.send({"type": notification_type, "channel": channel, "locale": locale, "source": source, "parts": parts})

    async def put(self, notification_type: str, channel: str) -> None:
        self.require_admin()
        _channel(channel)
        if len(notification_type) > 64:
            raise ApiError(422, "validation_failed", "The type name is too long.")
        body = self.parse(TemplateBody)
        parts = body.model_dump(exclude_none=True, exclude={"locale"})
        await self.services.templates.save(notification_type, channel, body.locale, parts)
        self.send({"type": notification_type, "channel": channel, "locale": body.locale,
                   "source": f"override:{body.locale}", "parts": parts})

    async def delete(self, notification_type: str, channel: str) -> None:
        self.require_admin()
        locale = self.parse_query(LocaleQuery).locale
        if not await self.services.templates.delete(notification_type, _channel(channel), locale):
            raise NotFound("There is no override to remove.", code="template_not_found")
        self.set_status(204)
        self.finish()
