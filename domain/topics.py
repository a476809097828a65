"""Topics (CONTRACT v2 §5 "Audiences and broadcasts"): named audiences that services and
admins fill in bulk, and that users may join or leave themselves when public."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from domain.errors import Forbidden, NotFound

MAX_IDS = 10_000  # user ids added or removed in one call (and named in one broadcast)
MAX_LISTED = 200  # topics in the list


class Topics:
    def __init__(self, topics, users, *, clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.users = users
        self.clock = clock

    async def list(self) -> list[tuple[dict, int]]:
        """(topic, subscriber count) of the first MAX_LISTED topics by key."""
        return [(doc, await self.topics.count(doc["_id"])) for doc in await self.topics.all(MAX_LISTED)]

    async def put(self, key: str, changes: dict) -> tuple[dict, int]:
        """Creates the topic or changes its `name` / `public`; (topic, subscriber count)."""
        doc = await self.topics.put(key, changes, self.clock())
        return doc, await self.topics.count(key)

    async def get(self, key: str) -> tuple[dict, int]:
        return await self.require(key), await self.topics.count(key)

    async def add(self, key: str, user_ids: list[str]) -> dict:
        """Adds the users (idempotent): {added, unknown (ids naming no user), subscribers}."""
        await self.require(key)
        ids, known = await self._known(user_ids)
        added = await self.topics.add(key, [u for u in ids if u in known], self.clock())
        return {"added": added, "unknown": [u for u in ids if u not in known],
                "subscribers": await self.topics.count(key)}

    async def remove(self, key: str, user_ids: list[str]) -> dict:
        """{removed, unknown, subscribers}."""
        await self.require(key)
        ids, known = await self._known(user_ids)
        removed = await self.topics.remove(key, [u for u in ids if u in known])
        return {"removed": removed, "unknown": [u for u in ids if u not in known],
                "subscribers": await self.topics.count(key)}

    async def join(self, key: str, user_id: str) -> None:
        if not (await self.require(key)).get("public"):
            raise Forbidden("Only public topics can be joined.", code="topic_not_public")
        await self.topics.add(key, [user_id], self.clock())

    async def leave(self, key: str, user_id: str) -> None:
        await self.require(key)
        await self.topics.remove(key, [user_id])

    async def require(self, key: str) -> dict:
        """The topic; NotFound if there is none."""
        doc = await self.topics.get(key)
        if doc is None:
            raise NotFound("No such topic.", code="topic_not_found")
        return doc

    async def _known(self, user_ids: list[str]) -> tuple[list[str], set[str]]:
        ids = list(dict.fromkeys(user_ids))
        return ids, await self.users.existing(ids)
