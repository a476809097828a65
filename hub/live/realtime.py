"""Live fan-out to WebSocket connections on every hub process, with per-feed sequence
numbers and retained history (CONTRACT §4; docs/realtime.md; feeds: domain/feeds.py).

One Redis script publishes a message on a feed atomically: once per message id and
feed (a redelivered event or a retried notification is not published twice), it takes the
feed's next `seq` (INCR, shared by all processes), builds the frame around it (the payload
was serialized once, by the caller), appends the frame to the feed's history (a Redis
Stream capped by length and age) and PUBLISHes it on the feed's Redis pub/sub channel. A
message for several feeds is one script call per feed, all in one pipeline. Each process
subscribes in Redis only to the feeds its own connections listen to, so it does work only
for those, and hands each message to them as one encoded frame.

Redis Cluster: the keys one script touches (dedupe, seq, history) carry the feed key as
their hash tag (`{order:42}`), so they live in one slot, and the script runs where that slot
does. PUBLISH (not a key) reaches subscribers on every node of a cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Awaitable, Callable, Protocol


from domain.compact_json import dumps
from domain.feeds import client_name, feeds_for_event, user_feed
from hub.adapters.redis_client import run_script

log = logging.getLogger(__name__)

DEDUPE_S = 900  # redeliveries come within minutes (a crash, a rebalance)
SEQ_TTL_S = 30 * 86400  # a feed idle this long starts over; `since` beyond its seq is not recovered

# KEYS: dedupe key, seq key, stream key (one hash tag: one slot on a cluster).
# ARGV: pub/sub channel, dedupe ttl, history length, history age (ms), seq ttl, frame head, frame
# tail, now (ms, the publishing process's clock: entry ids and the age trim follow it; an id
# never goes below the last one, whatever another process's clock says).
# Returns the seq, or 0 when this message was already published on this feed.
# Published as "<seq> <frame>" so a reader learns the seq without parsing the frame.
_PUBLISH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
local min_id = tonumber(ARGV[8]) - tonumber(ARGV[4])
local seq = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
local frame = ARGV[6] .. seq .. ARGV[7]
local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', ARGV[3], ARGV[8] .. '-*', 's', seq, 'f', frame)
if type(added) == 'table' and added.err then  -- at or below the last id: another clock is ahead
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], '*', 's', seq, 'f', frame)  -- the last id's ms, next seq
end
if min_id > 0 then redis.call('XTRIM', KEYS[3], 'MINID', min_id) end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[1], seq .. ' ' .. frame)
return seq
"""


# KEYS: seq key, stream key. ARGV: since, history length. Returns {seq} when there is nothing
# to read (since is current, ahead, or further back than history can reach), else {seq, entries}.
_SINCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = current - tonumber(ARGV[1])
if wanted <= 0 or wanted > tonumber(ARGV[2]) then return {current} end
return {current, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', wanted)}
"""


class Listener(Protocol):
    def deliver(self, key: str, seq: int, frame: bytes) -> None: ...


class Realtime:
    def __init__(self, redis, prefix: str, *, history_size: int, history_age_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock  # seconds; the history's age is measured on it
        self.prefix = prefix
        self.history_size = history_size
        self.history_age_ms = history_age_s * 1000
        self.local: dict[str, set[Listener]] = {}
        self._confirmed: dict[str, asyncio.Future] = {}
        self._publish_sha = hashlib.sha1(_PUBLISH.encode()).hexdigest()
        self._since = redis.register_script(_SINCE)
        self._task: asyncio.Task | None = None
        self._stopping = False

    def _pubsub_channel(self, key: str) -> str:
        return f"{self.prefix}rt:{key}"

    # The feed key in braces is the hash tag that keeps a feed's keys in one slot.
    def _seq_key(self, key: str) -> str:
        return f"{self.prefix}seq:{{{key}}}"

    def _stream(self, key: str) -> str:
        return f"{self.prefix}history:{{{key}}}"

    def _dedupe_key(self, key: str, message_id: str) -> str:
        return f"{self.prefix}rtid:{{{key}}}:{message_id}"

    async def start(self) -> None:
        await self.redis.script_load(_PUBLISH)  # on every master of a cluster (whose map this reads first)
        self.pubsub = self.redis.pubsub()
        # A pub/sub channel of its own keeps the subscription alive while no socket is connected.
        await self.pubsub.subscribe(self._pubsub_channel("_process"))
        self._task = asyncio.create_task(self._read(), name="realtime-reader")

    async def stop(self) -> None:
        self._stopping = True  # the embedded stand-in can swallow a cancellation that meets a reply
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            await self.pubsub.aclose()

    # Publishing -------------------------------------------------------------------------
    def _call(self, key: str, message_id: str, head: str, tail: str) -> list:
        """EVALSHA arguments publishing one message on one feed."""
        return [self._publish_sha, 3, self._dedupe_key(key, message_id), self._seq_key(key), self._stream(key),
                self._pubsub_channel(key), DEDUPE_S, self.history_size, self.history_age_ms, SEQ_TTL_S, head, tail,
                int(self.clock() * 1000)]

    async def _run(self, calls: list[list]) -> list[int]:
        """The calls in one pipeline, in order (hub/adapters/redis_client.run_script); each feed's
        calls go to one node, in order."""
        results = await run_script(self.redis, _PUBLISH, calls)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [int(seq) for seq in results]

    async def publish(self, message_id: str, payloads: dict[str, tuple[str, str]]) -> dict[str, int]:
        """Publishes once per `message_id` and feed: for each feed key, the frame
        `head + seq + tail`. Returns the seq of each feed it was published on now (not
        those where it already was)."""
        seqs = await self._run([self._call(key, message_id, head, tail) for key, (head, tail) in payloads.items()])
        return {key: seq for key, seq in zip(payloads, seqs) if seq}

    async def publish_events(self, batch: list[tuple[dict, list[str]]]) -> None:
        """Each (CloudEvent, feed keys) as an `event` frame, the event serialized once for
        all its feeds; the whole batch in one round trip, in order."""
        calls = []
        for event, keys in batch:
            body = dumps(event)
            for key in keys:
                calls.append(self._call(key, f"event:{event['id']}",
                                        f'{{"type":"event","channel":{dumps(client_name(key))},"seq":',
                                        f',"event":{body}}}'))
        if calls:
            await self._run(calls)

    async def publish_notification(self, user_id: str, notification: dict) -> int:
        """A `notification` frame on the user's feed; 0 if it was already published."""
        seqs = await self.publish(f"notification:{notification['id']}", {
            user_feed(user_id): ('{"type":"notification","channel":"user","seq":', f',"notification":{dumps(notification)}}}')})
        return next(iter(seqs.values()), 0)

    # Reading ----------------------------------------------------------------------------
    async def current_seq(self, key: str) -> int:
        return int(await self.redis.get(self._seq_key(key)) or 0)

    async def since(self, key: str, since: int | None) -> tuple[int, list[tuple[int, str]] | None]:
        """The feed's seq and the frames after `since`, oldest first; None when history
        no longer reaches back that far (or `since` is from before the feed started over)."""
        if since is None:
            return await self.current_seq(key), []
        result = await self._since(keys=[self._seq_key(key), self._stream(key)], args=[since, self.history_size])
        current = int(result[0])
        if len(result) == 1:
            return current, ([] if since == current else None)
        entries = [(int(fields[1]), fields[3]) for _id, fields in reversed(result[1])]
        if not entries or entries[0][0] != since + 1:
            return current, None
        return current, entries

    # Local subscribers ------------------------------------------------------------------
    async def join(self, key: str, listener: Listener) -> None:
        """Adds a local listener; returns once Redis confirms the subscription, so whatever is
        published after this returns reaches the listener."""
        listeners = self.local.setdefault(key, set())
        listeners.add(listener)
        if len(listeners) == 1:
            waiter = self._confirmed.get(key)
            if waiter is None:
                waiter = self._confirmed[key] = asyncio.get_running_loop().create_future()
                await self.pubsub.subscribe(self._pubsub_channel(key))
            await asyncio.shield(waiter)
        elif key in self._confirmed:
            await asyncio.shield(self._confirmed[key])

    async def leave(self, key: str, listener: Listener) -> None:
        listeners = self.local.get(key)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self.local[key]
            waiter = self._confirmed.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # a join still waiting returns (and finds itself gone)
            await self.pubsub.unsubscribe(self._pubsub_channel(key))

    async def _read(self) -> None:
        skip = len(self._pubsub_channel(""))
        failed = False
        while not self._stopping:
            try:
                if failed:
                    await self._resubscribe()
                    failed = False
                message = await self.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("realtime subscription failed; reconnecting")
                failed = True
                await asyncio.sleep(1)
                continue
            if message is None:
                continue
            key = message["channel"][skip:]
            if message["type"] == "subscribe":
                waiter = self._confirmed.get(key)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif message["type"] == "message":
                listeners = self.local.get(key)
                if listeners:
                    seq, frame = message["data"].split(" ", 1)
                    seq, frame = int(seq), frame.encode()
                    for listener in list(listeners):
                        listener.deliver(key, seq, frame)


    async def _resubscribe(self) -> None:
        """A new subscriber connection, to every feed this process listens to. On a
        cluster it goes to the node that owns its first pub/sub channel's slot now: a key of that
        slot is read first, which makes redis-py refresh its slot map if the master it knew
        is gone (failed over), rather than reconnecting to a dead address for ever. Frames
        published meanwhile are filled from history when the next one shows the gap."""
        first = self._pubsub_channel("_process")
        await self.redis.exists(first)
        old, self.pubsub = self.pubsub, self.redis.pubsub()
        try:
            await old.aclose()
        except Exception:  # the old connection is broken anyway
            pass
        await self.pubsub.subscribe(first, *(self._pubsub_channel(key) for key in self.local))


class FanOut:
    """The handler of consumer group hub-realtime: collects a fetched batch's events with
    their feeds; `flush` takes them and returns their publishing in one round trip (which
    the consumer runs, and retries, before the commit)."""

    def __init__(self, realtime: Realtime, own_source: str) -> None:
        self.realtime = realtime
        self.own_source = own_source
        self.pending: list[tuple[dict, list[str]]] = []

    async def add(self, event: dict) -> None:
        keys = feeds_for_event(event, self.own_source)
        if keys:
            self.pending.append((event, keys))

    def flush(self) -> Callable[[], Awaitable[None]]:
        batch, self.pending = self.pending, []
        return lambda: self.realtime.publish_events(batch)
