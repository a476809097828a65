"""Topics (CONTRACT v2 §5 "Audiences and broadcasts"): named audiences that services and
admins fill in bulk, and that users may join or leave themselves when public."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool

from domain.clock import utcnow
from domain.errors import Forbidden, NotFound
from handlers.base import BaseHandler
from handlers.schemas import Body
from hub.wiring.openapi import MAX_PATH_PARAMETER

MAX_IDS = 10_000
# A topic key is any path segment the OpenAPI document allows (1 to MAX_PATH_PARAMETER
# characters; longer ones are refused before the handler runs).
TopicKey = Annotated[str, Field(min_length=1, max_length=MAX_PATH_PARAMETER)]
UserId = Annotated[str, Field(min_length=1, max_length=64)]


class TopicBody(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    public: StrictBool | None = None


class MembersBody(Body):
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=MAX_IDS)]


def public_topic(doc: dict, subscribers: int) -> dict:
    return {"key": doc["_id"], "name": doc.get("name") or doc["_id"], "public": bool(doc.get("public")),
            "subscribers": subscribers, "created_at": doc["created_at"].isoformat()}


async def _topic(handler: BaseHandler, key: str) -> dict:
    doc = await handler.stores.topics.get(key)
    if doc is None:
        raise NotFound("No such topic.", code="topic_not_found")
    return doc


class TopicsHandler(BaseHandler):
    openapi = {"get": {"summary": "Topics with their subscriber counts (service key or admin)",
                       "auth": "service_or_admin"}}

    async def get(self) -> None:
        self.require_service_or_admin()
        store = self.stores.topics
        self.send({"items": [public_topic(doc, await store.count(doc["_id"])) for doc in await store.all(200)]})


class TopicHandler(BaseHandler):
    openapi = {
        "put": {"summary": "Create a topic or change its name / public flag (service key or admin)",
                "body": TopicBody, "auth": "service_or_admin"},
        "get": {"summary": "A topic: {key, name, public, subscribers}", "auth": "service_or_admin"},
    }

    async def put(self, key: str) -> None:
        self.require_service_or_admin()
        body = self.parse(TopicBody)
        changes = body.model_dump(exclude_none=True)
        doc = await self.stores.topics.put(key, changes, utcnow())
        self.send(public_topic(doc, await self.stores.topics.count(key)))

    async def get(self, key: str) -> None:
        self.require_service_or_admin()
        doc = await _topic(self, key)
        self.send(public_topic(doc, await self.stores.topics.count(key)))


class TopicSubscribersHandler(BaseHandler):
    openapi = {
        "post": {"summary": f"Add up to {MAX_IDS} users to a topic (idempotent; ids naming no user are "
                            "listed in `unknown`)", "body": MembersBody, "auth": "service_or_admin"},
        "delete": {"summary": f"Remove up to {MAX_IDS} users from a topic", "body": MembersBody,
                   "auth": "service_or_admin"},
    }

    async def post(self, key: str) -> None:
        self.require_service_or_admin()
        await _topic(self, key)
        ids = list(dict.fromkeys(self.parse(MembersBody).user_ids))
        known = await self.stores.users.existing(ids)
        added = await self.stores.topics.add(key, [u for u in ids if u in known], utcnow())
        self.send({"key": key, "added": added, "unknown": [u for u in ids if u not in known],
                   "subscribers": await self.stores.topics.count(key)})

    async def delete(self, key: str) -> None:
        self.require_service_or_admin()
        await _topic(self, key)
        ids = list(dict.fromkeys(self.parse(MembersBody).user_ids))
        known = await self.stores.users.existing(ids)
        removed = await self.stores.topics.remove(key, [u for u in ids if u in known])
        self.send({"key": key, "removed": removed, "unknown": [u for u in ids if u not in known],
                   "subscribers": await self.stores.topics.count(key)})


class MyTopicHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Join a public topic", "auth": "user"},
        "delete": {"summary": "Leave a topic", "auth": "user"},
    }

    async def post(self, key: str) -> None:
        caller = self.require_user()
        doc = await _topic(self, key)
        if not doc.get("public"):
            raise Forbidden("Only public topics can be joined.", code="topic_not_public")
        await self.stores.topics.add(key, [caller.id], utcnow())
        self.send({"key": key, "subscribed": True})

    async def delete(self, key: str) -> None:
        caller = self.require_user()
        await _topic(self, key)
        await self.stores.topics.remove(key, [caller.id])
        self.send({"key": key, "subscribed": False})
