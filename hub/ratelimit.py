"""Fixed-window request counting in Redis, shared by every hub process."""

from __future__ import annotations

import time

from domain.errors import RateLimited


class RateLimiter:
    def __init__(self, redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def hit(self, key: str, limit: int, window_s: int = 60) -> None:
        """Count one request against `key`; raise RateLimited once over `limit` in the window."""
        now = time.time()
        window = int(now // window_s)
        redis_key = f"{self.prefix}ratelimit:{key}:{window}"
        async with self.redis.pipeline(transaction=True) as pipe:
            count, _ = await pipe.incr(redis_key).expire(redis_key, window_s + 1).execute()
        if count > limit:
            retry_after = max(1, int(window_s - now % window_s) + 1)
            raise RateLimited("Too many requests; try again later.", retry_after=retry_after)
