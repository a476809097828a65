"""Live fan-out to WebSocket connections on every hub process, through Redis pub/sub.

Any process publishes a message for a channel (`user:<id>` for a user's notifications);
each process subscribes in Redis only to the channels its own connections listen to, and
hands each message, serialized once, to those connections. Every channel has a sequence
number (Redis INCR) shared by all processes, carried in each message as `seq`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Listener(Protocol):
    def deliver(self, frame: str) -> None: ...


class Realtime:
    def __init__(self, redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.local: dict[str, set[Listener]] = {}
        self._task: asyncio.Task | None = None

    def _key(self, channel: str) -> str:
        return f"{self.prefix}rt:{channel}"

    async def start(self) -> None:
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        # A channel of its own keeps the subscription alive while no socket is connected.
        await self.pubsub.subscribe(self._key("_process"))
        self._task = asyncio.create_task(self._read(), name="realtime-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            await self.pubsub.aclose()

    async def publish(self, channel: str, frame: dict) -> int:
        """Gives the message the channel's next seq and publishes it; returns the seq."""
        seq = await self.redis.incr(f"{self.prefix}seq:{channel}")
        await self.redis.publish(self._key(channel), json.dumps(dict(frame, seq=seq), separators=(",", ":")))
        return seq

    async def current_seq(self, channel: str) -> int:
        return int(await self.redis.get(f"{self.prefix}seq:{channel}") or 0)

    async def join(self, channel: str, listener: Listener) -> None:
        listeners = self.local.setdefault(channel, set())
        listeners.add(listener)
        if len(listeners) == 1:
            await self.pubsub.subscribe(self._key(channel))

    async def leave(self, channel: str, listener: Listener) -> None:
        listeners = self.local.get(channel)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self.local[channel]
            await self.pubsub.unsubscribe(self._key(channel))

    async def _read(self) -> None:
        skip = len(self._key(""))
        while True:
            try:
                message = await self.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("realtime subscription failed; reconnecting")
                await asyncio.sleep(1)
                continue
            if message is None or message.get("type") != "message":
                continue
            for listener in list(self.local.get(message["channel"][skip:], ())):
                listener.deliver(message["data"])
