"""The Redis connection: a real server when REDIS_URL is set (a Redis Cluster with
REDIS_CLUSTER=1), else fakeredis's in-process stand-in (one hub process only)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

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


async def run_script(client, script: str, calls: list[list]) -> list:
    """`calls` are EVALSHA arguments (sha of `script`, number of keys, keys, args), sent in one
    pipeline (one round trip per node on a cluster) and answered in order; a call that failed
    is answered by its exception. Not `pipe.evalsha()` nor registered scripts: redis-py's
    cluster pipeline refuses them, as it cannot answer NOSCRIPT itself. A node that lost its
    scripts (restarted, failed over) answers NOSCRIPT to its calls only: the script is loaded
    again and just those are redone, still in order."""
    results = await _pipeline(client, calls)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        await client.script_load(script)
        for i, result in zip(missing, await _pipeline(client, [calls[i] for i in missing])):
            results[i] = result
    return results


async def _pipeline(client, calls: list[list]) -> list:
    async with client.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.execute_command("EVALSHA", *call)
        return await pipe.execute(raise_on_error=False)
