"""One WebSocket client's subscriptions (CONTRACT §4; docs/realtime.md).

Joining a feed (domain/feeds.py; what a frame's `channel` names): listen first, then read
the feed's seq and what came after `since`, so nothing published in between is lost; live frames that arrive meanwhile wait and follow the
replay, minus those it already held. A live frame that skips a seq (this process's Redis
subscription dropped and came back) is filled in from history the same way, or, when history
cannot, answered like a subscribe that could not recover: the client reloads by REST.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from domain.callers import Caller
from domain.compact_json import encode
from domain.errors import Forbidden, Invalid
from domain.feeds import conflatable, feed_key, may_watch_order, parse_feed, user_feed
from hub.live.realtime import Realtime
from hub.live.send_queue import SendQueue

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100  # per signed-in connection; anonymous ones get HUB_WS_ANONYMOUS_MAX_SUBSCRIPTIONS


class Session:
    def __init__(self, realtime: Realtime, send: SendQueue, *,
                 order_owner: Callable[[str], Awaitable[str | None]],
                 anonymous_subscriptions: int = MAX_SUBSCRIPTIONS) -> None:
        self.realtime = realtime
        self.anonymous_subscriptions = anonymous_subscriptions
        self.send = send
        self.order_owner = order_owner
        self.caller: Caller | None = None
        self.names: dict[str, str] = {}  # feed key → the name the client used
        self.last: dict[str, int] = {}  # feed key → seq of the last frame queued
        self.waiting: dict[str, list[tuple[int, bytes]]] = {}  # live frames held during a replay
        self._tasks: set[asyncio.Task] = set()

    def write(self, frame: dict) -> None:
        self.send.put(encode(frame))

    async def subscribe(self, name, since, reply: dict | None = None) -> None:
        """Joins the feed `name` (the frame's `channel`) and answers `subscribed` (with the
        fields of `reply`, the frame's id), then the replay; Invalid or Forbidden (and
        nothing changes) when the client may not."""
        kind, ident = parse_feed(name)
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            raise Invalid("'since' is a non-negative integer seq.", code="invalid_since")
        key = feed_key(kind, ident, self.caller)
        if kind == "order" and not may_watch_order(self.caller, await self.order_owner(ident)):
            raise Forbidden("Only the order's owner or an admin may join this channel.")
        limit = MAX_SUBSCRIPTIONS if self.caller is not None else min(MAX_SUBSCRIPTIONS, self.anonymous_subscriptions)
        if key not in self.names and len(self.names) >= limit:
            raise Invalid(f"At most {limit} subscriptions per connection"
                          f"{'' if self.caller else ' before signing in'}.", code="too_many_subscriptions")
        self.names[key] = name
        self.waiting.setdefault(key, [])
        try:
            await self.realtime.join(key, self)
            await self._catch_up(key, since, announce=True, reply=reply)
        except Exception:  # Redis unreachable: not subscribed, the client may try again
            await self._drop(key)
            raise

    async def _catch_up(self, key: str, since: int | None, *, announce: bool, reply: dict | None = None) -> None:
        try:
            current, frames = await self.realtime.since(key, since)
        except Exception:
            self.waiting.pop(key, None)
            raise
        if key not in self.names:  # unsubscribed meanwhile
            return
        recovered = since is not None and frames is not None
        if announce or not recovered:
            self.write({"type": "subscribed", "channel": self.names[key], "seq": current, "recovered": recovered,
                        **(reply or {})})
        for _seq, frame in frames or ():
            self.send.put(frame.encode())
        last = current
        for seq, frame in self.waiting.pop(key, ()):
            if seq > last:
                self.send.put(frame)
                last = seq
        self.last[key] = last

    async def unsubscribe(self, name) -> None:
        kind, ident = parse_feed(name)
        key = user_feed(self.caller.id) if kind == "user" and self.caller else name
        if key in self.names:
            await self._drop(key)

    async def _drop(self, key: str) -> None:
        self.names.pop(key, None)
        self.last.pop(key, None)
        self.waiting.pop(key, None)
        await self.realtime.leave(key, self)

    def deliver(self, key: str, seq: int, frame: bytes) -> None:
        """A live frame from the fan-out (Realtime listener)."""
        waiting = self.waiting.get(key)
        if waiting is not None:
            waiting.append((seq, frame))
            return
        last = self.last.get(key)
        if last is None or seq <= last:
            return
        if seq > last + 1:
            self.waiting[key] = [(seq, frame)]
            task = asyncio.create_task(self._fill(key, last))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self.last[key] = seq
        self.send.put(frame, key if conflatable(key) else None)

    async def _fill(self, key: str, last: int) -> None:
        try:
            await self._catch_up(key, last, announce=False)
        except Exception:
            log.exception("could not fill a gap from history", extra={"feed": key})

    async def close(self) -> None:
        self.send.close()
        for task in self._tasks:
            task.cancel()
        for key in list(self.names):
            await self.realtime.leave(key, self)
        self.names.clear()
