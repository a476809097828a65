"""Topics (CONTRACT v2 §5 "Audiences and broadcasts"): named audiences that services and
admins fill in bulk, and that users may join or leave themselves when public."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool

from domain.topics import MAX_IDS
from handlers.base import BaseHandler
from handlers.schemas import Body
from hub.wiring.openapi import MAX_PATH_PARAMETER

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


class TopicsHandler(BaseHandler):
    openapi = {"get": {"summary": "Topics with their subscriber counts (service key or admin)",
                       "auth": "service_or_admin"}}

    async def get(self) -> None:
        self.require_service_or_admin()
        self.send({"items": [public_topic(doc, count) for doc, count in await self.services.topics.list()]})


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
        self.send(public_topic(*await self.services.topics.put(key, changes)))

    async def get(self, key: str) -> None:
        self.require_service_or_admin()
        self.send(public_topic(*await self.services.topics.get(key)))


class TopicSubscribersHandler(BaseHandler):
    openapi = {
        "post": {"summary": f"Add up to {MAX_IDS} users to a topic (idempotent; ids naming no user are "
                            "listed in `unknown`)", "body": MembersBody, "auth": "service_or_admin"},
        "delete": {"summary": f"Remove up to {MAX_IDS} users from a topic", "body": MembersBody,
                   "auth": "service_or_admin"},
    }

    async def post(self, key: str) -> None:
        self.require_service_or_admin()
        await self.services.topics.require(key)  # an unknown topic is a 404 before the body is looked at
        self.send({"key": key, **await self.services.topics.add(key, self.parse(MembersBody).user_ids)})

    async def delete(self, key: str) -> None:
        self.require_service_or_admin()
        await self.services.topics.require(key)
        self.send({"key": key, **await self.services.topics.remove(key, self.parse(MembersBody).user_ids)})


class MyTopicHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Join a public topic", "auth": "user"},
        "delete": {"summary": "Leave a topic", "auth": "user"},
    }

    async def post(self, key: str) -> None:
        caller = self.require_user()
        await self.services.topics.join(key, caller.id)
        self.send({"key": key, "subscribed": True})

    async def delete(self, key: str) -> None:
        caller = self.require_user()
        await self.services.topics.leave(key, caller.id)
        self.send({"key": key, "subscribed": False})
