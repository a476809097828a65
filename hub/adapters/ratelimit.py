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
        if await self.count(key, window_s) > limit:
            raise RateLimited("Too many requests; try again later.", retry_after=_retry_after(window_s))

    async def count(self, key: str, window_s: int = 60) -> int:
        """Count one against `key`; the window's count so far."""
        redis_key = self._key(key, window_s)
        async with self.redis.pipeline(transaction=True) as pipe:
            count, _ = await pipe.incr(redis_key).expire(redis_key, window_s + 1).execute()
        return count

    async def check(self, key: str, limit: int, window_s: int = 60) -> None:
        """Raise RateLimited if `key` has reached `limit` in the window, counting nothing."""
        if int(await self.redis.get(self._key(key, window_s)) or 0) >= limit:
            raise RateLimited("Too many requests; try again later.", retry_after=_retry_after(window_s))

    def _key(self, key: str, window_s: int) -> str:
        return f"{self.prefix}ratelimit:{key}:{int(time.time() // window_s)}"


def _retry_after(window_s: int) -> int:
    """Seconds until the current window ends."""
    return max(1, int(window_s - time.time() % window_s) + 1)
