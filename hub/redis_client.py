"""The Redis connection: a real server when REDIS_URL is set, else fakeredis's
in-process stand-in (one hub process only)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

from config.settings import Settings

log = logging.getLogger(__name__)


def connect_redis(settings: Settings) -> redis.Redis:
    if settings.redis_url:
        return redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5, health_check_interval=30)
    from fakeredis import FakeAsyncRedis

    log.warning("REDIS_URL is unset: using the embedded in-process Redis stand-in (single hub process only)")
    return FakeAsyncRedis(decode_responses=True)


async def redis_healthy(client: redis.Redis) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout=2))
    except (RedisError, asyncio.TimeoutError, OSError):
        return False
