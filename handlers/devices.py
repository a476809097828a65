"""Native push devices of the caller (CONTRACT v2 §5): register, list, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from domain.devices import MAX_DEVICES_PER_USER, normalize_token
from handlers.base import BaseHandler
from handlers.schemas import Body, Locale


class DeviceBody(Body):
    # The token's form depends on the platform (domain/devices.py; an APNs token's case and
    # spaces are forgiven, which the document does not mention).
    model_config = ConfigDict(json_schema_extra={"additionalProperties": False, "oneOf": [
        {"properties": {"platform": {"const": "apns"}, "token": {"pattern": r"^[0-9A-Fa-f]{64,200}$"}}},
        {"properties": {"platform": {"const": "fcm"}, "token": {"pattern": r"^[A-Za-z0-9_:.-]{16,1024}$"}}}]})

    platform: Literal["apns", "fcm"]
    token: Annotated[str, Field(min_length=16, max_length=1024)]
    environment: Literal["production", "sandbox"] = "production"
    locale: Locale | None = None
    app_version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")] | None = None

    @field_validator("token")
    @classmethod
    def _token(cls, token: str, info: ValidationInfo) -> str:
        platform = info.data.get("platform")
        return normalize_token(platform, token) if platform else token


def public_device(device: dict) -> dict:
    # The token is a credential for pushing to this phone: never echoed back.
    return {"id": device["_id"], "platform": device["platform"], "environment": device["environment"],
            "locale": device.get("locale"), "app_version": device.get("app_version"),
            "created_at": device["created_at"].isoformat()}


class DevicesHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Register this phone's APNs or FCM token (the same token again: 200, same id; "
                            f"past {MAX_DEVICES_PER_USER} devices the oldest is dropped)",
                 "body": DeviceBody, "status": (201, 200), "auth": "user"},
        "get": {"summary": "The caller's devices", "auth": "user"},
    }

    async def post(self) -> None:
        caller = self.require_user()
        body = self.parse(DeviceBody)
        fields = {"environment": body.environment, "locale": body.locale, "app_version": body.app_version}
        device, created = await self.services.devices.register(caller.id, body.platform, body.token, fields)
        self.send(public_device(device), 201 if created else 200)

    async def get(self) -> None:
        caller = self.require_user()
        self.send({"items": [public_device(d) for d in await self.services.devices.of_user(caller.id)]})


class DeviceHandler(BaseHandler):
    openapi = {"delete": {"summary": "Forget one of the caller's devices", "status": 204, "auth": "user"}}

    async def delete(self, device_id: str) -> None:
        caller = self.require_user()
        await self.services.devices.remove(caller.id, device_id[:64])
        self.set_status(204)
        self.finish()
