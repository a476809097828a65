"""Per-user frequency caps as sliding windows in Redis, shared by every hub process.

Each user has a sorted set of the notifications counted in the last day (member: the
notification id, score: when it was counted). Admitting one adds it and counts in the
same transaction; if that went over a cap it is taken out again and the time at which
it will fit is returned. Two racing admissions can both see themselves over and both
wait, never both pass over a cap. Counting by notification id makes a repeated
admission (a dispatch redone after a crash) count once.
"""

from __future__ import annotations

from datetime import datetime, timezone

from domain.notification_policy import DAY_MS, HOUR_MS, cap_release_at
from hub.adapters.redis_client import run_script


# `admit`'s first step as one script per user (atomic on the user's key alone, so it works on
# Redis Cluster too), for `admit_many`: 1 if it fits and is counted, 0 if not (and not counted).
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local in_hour = redis.call('ZCOUNT', KEYS[1], tonumber(ARGV[2]) - tonumber(ARGV[4]) + 1, '+inf')
local in_day = redis.call('ZCARD', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if in_hour <= tonumber(ARGV[5]) and in_day <= tonumber(ARGV[6]) then return 1 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 0
"""


class FrequencyCaps:
    def __init__(self, redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._admit = redis.register_script(_ADMIT)

    async def admit_many(self, entries: list[tuple[str, str, int, int]], now: datetime) -> dict[str, datetime | None]:
        """`admit` for many (user id, notification id, max per hour, max per day) at once: one
        round trip for all that fit; those over a cap get their release time from `admit`."""
        if not entries:
            return {}
        now_ms = int(now.timestamp() * 1000)
        fits = await run_script(self.redis, _ADMIT, [
            [self._admit.sha, 1, f"{self.prefix}caps:{user_id}",
             notification_id, now_ms, DAY_MS, HOUR_MS, max_per_hour, max_per_day]
            for user_id, notification_id, max_per_hour, max_per_day in entries])
        for fit in fits:
            if isinstance(fit, Exception):
                raise fit
        admitted: dict[str, datetime | None] = {}
        for (user_id, notification_id, max_per_hour, max_per_day), fit in zip(entries, fits):
            admitted[notification_id] = None if fit == 1 else await self.admit(
                user_id, notification_id, now, max_per_hour, max_per_day)
        return admitted

    async def admit(self, user_id: str, notification_id: str, now: datetime, max_per_hour: int,
                    max_per_day: int) -> datetime | None:
        """None when it fits (and is now counted), else when it will fit."""
        key = f"{self.prefix}caps:{user_id}"
        now_ms = int(now.timestamp() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now_ms - DAY_MS)
            pipe.zadd(key, {notification_id: now_ms})
            pipe.zcount(key, now_ms - HOUR_MS + 1, "+inf")
            pipe.zcard(key)
            pipe.pexpire(key, DAY_MS)
            _, _, in_hour, in_day, _ = await pipe.execute()
        if in_hour <= max_per_hour and in_day <= max_per_day:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(key, notification_id)
            pipe.zrangebyscore(key, "-inf", "+inf", withscores=True)
            _, counted = await pipe.execute()
        release_ms = cap_release_at(sorted(int(score) for _, score in counted), now_ms, max_per_hour, max_per_day)
        if release_ms is None:  # the others aged out between the two steps: try again
            return await self.admit(user_id, notification_id, now, max_per_hour, max_per_day)
        return datetime.fromtimestamp(release_ms / 1000, timezone.utc)

    async def admit_daily(self, kind: str, user_id: str, notification_id: str, now: datetime, limit: int) -> bool:
        """Counts the notification against the user's ceiling of `kind` messages in any 24
        hours; False (and not counted) when it would go over. Same sorted-set scheme as
        `admit`: a repeated admission counts once, racing ones never both pass over."""
        key = f"{self.prefix}caps:{kind}:{user_id}"
        now_ms = int(now.timestamp() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now_ms - DAY_MS)
            pipe.zadd(key, {notification_id: now_ms})
            pipe.zcard(key)
            pipe.pexpire(key, DAY_MS)
            _, _, in_day, _ = await pipe.execute()
        if in_day <= limit:
            return True
        await self.redis.zrem(key, notification_id)
        return False
