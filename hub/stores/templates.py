"""The `notification_templates` collection: admins' replacements of shipped templates."""

from __future__ import annotations

from domain.clock import utcnow


class TemplateStore:
    def __init__(self, db) -> None:
        self.col = db["notification_templates"]

    async def create_indexes(self) -> None:
        pass  # keyed by _id "<type>/<channel>/<locale>"; the collection stays small

    async def all(self) -> list[dict]:
        return await self.col.find({}).to_list(None)

    async def put(self, notification_type: str, channel: str, locale: str, parts: dict) -> None:
        await self.col.replace_one(
            {"_id": f"{notification_type}/{channel}/{locale}"},
            {"type": notification_type, "channel": channel, "locale": locale, "parts": parts, "updated_at": utcnow()},
            upsert=True)

    async def delete(self, notification_type: str, channel: str, locale: str) -> bool:
        result = await self.col.delete_one({"_id": f"{notification_type}/{channel}/{locale}"})
        return result.deleted_count == 1
