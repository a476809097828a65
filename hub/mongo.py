"""The MongoDB connection: a real server when MONGODB_URI is set, else an in-memory
mongomock store behind the same Motor API."""

from __future__ import annotations

import asyncio
import logging

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo.errors import PyMongoError

from config.settings import Settings

log = logging.getLogger(__name__)


def connect_mongo(settings: Settings):
    if settings.mongodb_uri:
        return AsyncIOMotorClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    from mongomock_motor import AsyncMongoMockClient

    log.warning("MONGODB_URI is unset: using the embedded in-memory document store; data is lost on exit")
    return AsyncMongoMockClient(tz_aware=True)


async def mongo_healthy(db: AsyncIOMotorDatabase) -> bool:
    try:
        await asyncio.wait_for(db.command("ping"), timeout=2)
        return True
    except (PyMongoError, asyncio.TimeoutError, OSError):
        return False
