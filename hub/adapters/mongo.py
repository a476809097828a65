"""The MongoDB connection: PyMongo's async client to a real server when MONGODB_URI is
set, else the embedded in-memory store (hub/adapters/embedded_mongo.py) behind the same API."""

from __future__ import annotations

import asyncio
import logging

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from config.settings import Settings
from hub.adapters.embedded_mongo import embedded_client

log = logging.getLogger(__name__)


def connect_mongo(settings: Settings):
    if settings.mongodb_uri:
        return AsyncMongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    log.warning("MONGODB_URI is unset: using the embedded in-memory document store; data is lost on exit")
    return embedded_client()


async def mongo_healthy(db: AsyncDatabase) -> bool:
    try:
        await asyncio.wait_for(db.command("ping"), timeout=2)
        return True
    except (PyMongoError, asyncio.TimeoutError, OSError):
        return False
