"""GET and PATCH /api/v1/users/me."""

from __future__ import annotations

from domain.users import public_user
from handlers.base import BaseHandler
from handlers.schemas import Body, Locale, Name, Phone, Timezone


class ProfileBody(Body):
    name: Name | None = None
    phone: Phone | None = None
    # May be left out, but not set to null: the default is not validated, an explicit null is.
    timezone: Timezone = None  # type: ignore[assignment]
    locale: Locale = None  # type: ignore[assignment]


class MeHandler(BaseHandler):
    openapi = {
        "get": {"summary": "The signed-in user", "auth": "user"},
        "patch": {"summary": "Change name, phone, timezone or locale", "body": ProfileBody, "auth": "user"},
    }

    async def get(self) -> None:
        caller = self.require_user()
        self.send(public_user(await self.services.accounts.user(caller.id)))

    async def patch(self) -> None:
        caller = self.require_user()
        changes = self.parse(ProfileBody).model_dump(exclude_unset=True)
        self.send(public_user(await self.services.accounts.update_profile(caller.id, changes)))
