"""The Redis connection: a real server when REDIS_URL is set (a Redis Cluster with
REDIS_CLUSTER=1), else fakeredis's in-process stand-in (one hub process only)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from config.settings import Settings

log = logging.getLogger(__name__)


# Concurrent commands beyond the pool's size wait for a connection (up to POOL_WAIT_S)
# instead of failing: redis-py's default pool raises once 100 are in use.
POOL_SIZE, POOL_WAIT_S = 64, 10


# redis-py's cluster client has no waiting pool: past max_connections per node a command
# fails. So this is a ceiling far above what one process asks of one node at once (each
# command holds a connection for one round trip), not a pool size.
CLUSTER_MAX_CONNECTIONS_PER_NODE = 1024


def connect_redis(settings: Settings) -> redis.Redis | RedisCluster:
    if settings.redis_cluster:
        # Learns the other nodes from this one and follows MOVED/ASK and failovers.
        return RedisCluster.from_url(
            settings.redis_url, max_connections=CLUSTER_MAX_CONNECTIONS_PER_NODE, decode_responses=True,
            socket_timeout=5, health_check_interval=30)
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
