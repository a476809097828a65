"""The Redis connection: a real server when REDIS_URL is set (a Redis Cluster with
REDIS_CLUSTER=1), else fakeredis's in-process stand-in (one hub process only)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

from config.settings import Settings

log = logging.getLogger(__name__)


# Concurrent commands beyond the pool's size wait for a connection (up to POOL_WAIT_S)
# instead of failing: redis-py's default pool raises once 100 are in use.
POOL_SIZE, POOL_WAIT_S = 64, 10


def connect_redis(settings: Settings) -> redis.Redis:
    if settings.redis_cluster:
        # Keys a script or a transaction touches together share a hash tag, so each such
        # call lands on one node; the cluster client routes every call by its keys' slot.
        return redis.RedisCluster.from_url(settings.redis_url, decode_responses=True, socket_timeout=5)
    if settings.redis_url:
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, decode_responses=True,
            socket_timeout=5, health_check_interval=30)
        return redis.Redis(connection_pool=pool)
    from fakeredis import FakeAsyncRedis

    log.warning("REDIS_URL is unset: using the embedded in-process Redis stand-in (single hub process only)")
    return FakeAsyncRedis(decode_responses=True, connection_pool_class=redis.BlockingConnectionPool,
                          max_connections=POOL_SIZE, timeout=POOL_WAIT_S)


async def redis_healthy(client: redis.Redis) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout=2))
    except (RedisError, asyncio.TimeoutError, OSError):
        return False
