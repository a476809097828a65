"""Unit tests of the realtime gateway's parts (CONTRACT §4, docs/realtime.md):

- hub/live/send_queue.py SendQueue with a fake socket whose flushes the test completes;
- hub/live/realtime.py Realtime against the test Redis (the real one when tests/conftest.py found
  it, else fakeredis), each test under a prefix of its own;
- hub/live/gateway.py Session on a real Realtime, with a recorder in place of the send queue;
- domain/feeds.py: routing of events to channels, channel names, who may join.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid

import pytest
from tornado.websocket import WebSocketClosedError

from domain.callers import Caller
from domain.errors import Forbidden, Invalid
from domain.feeds import (ADMIN_ORDERS, feed_key, feeds_for_event, client_name, conflatable,
                                      may_watch_order, parse_feed)
from hub.live.gateway import MAX_SUBSCRIPTIONS, Session
from hub.live.realtime import Realtime
from hub.live.send_queue import SendQueue
from tests.clock import Clock
from tests.conftest import REDIS_URL

OWN = "/hub"
ALICE = Caller(kind="user", id="alice", roles=frozenset({"customer"}))
BOB = Caller(kind="user", id="bob", roles=frozenset({"customer"}))
ADMIN = Caller(kind="user", id="root", roles=frozenset({"admin"}))


async def settle(rounds: int = 5) -> None:
    """Lets callbacks scheduled with call_soon (future callbacks) run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.01)
    return value


# SendQueue ------------------------------------------------------------------------------
class FakeSocket:
    """`write` records the frame and returns a future the test completes with `flush` (or
    None: a socket that takes everything at once, as the gateway's writer says it)."""

    def __init__(self, *, instant: bool = False) -> None:
        self.instant = instant
        self.written: list[bytes] = []
        self.writes_per_batch: list[int] = []
        self.pending: list[asyncio.Future] = []
        self.closed = False

    def write(self, frame: bytes) -> asyncio.Future | None:
        if self.closed:
            raise WebSocketClosedError()
        self.written.append(frame)
        if self.instant:
            return None
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    async def flush(self, error: Exception | None = None) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        await settle()


class Overflows:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def frame(text: str, size: int = 0) -> bytes:
    return (text + "." * max(0, size - len(text))).encode()


async def test_a_frame_on_an_idle_socket_is_written_at_once():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 1000)
    queue.put(b"one")
    assert socket.written == [b"one"]  # synchronously, no task in between
    assert queue.bytes == 3  # written, not yet flushed
    await socket.flush()
    assert queue.bytes == 0
    queue.put(b"two")
    assert socket.written == [b"one", b"two"]
    assert overflow.calls == 0


async def test_the_writer_waits_for_the_flush_then_writes_everything_waiting_together():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 1000)
    queue.put(frame("a", 10))
    queue.put(frame("b", 20))
    queue.put(frame("c", 30))
    await settle()
    assert socket.written == [frame("a", 10)]  # b and c wait for a's flush
    assert queue.bytes == 60
    await socket.flush()
    assert socket.written == [frame("a", 10), frame("b", 20), frame("c", 30)]
    assert len(socket.pending) == 2  # one batch: b and c written back to back
    assert queue.bytes == 50  # in flight now
    queue.put(frame("d", 5))
    await settle()
    assert socket.written[-1] == frame("c", 30)  # d waits for the batch's flush
    assert queue.bytes == 55
    await socket.flush()
    assert socket.written[-1] == frame("d", 5) and queue.bytes == 5
    await socket.flush()
    assert queue.bytes == 0 and overflow.calls == 0


async def test_waiting_frames_of_one_key_conflate_to_the_latest_in_place_others_all_kept():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 10_000)
    queue.put(b"first")  # in flight
    queue.put(b"p1-v1", "product:1")
    queue.put(b"p2-v1", "product:2")
    queue.put(b"order-1")
    queue.put(b"p1-v2-longer", "product:1")
    queue.put(b"order-2")
    queue.put(b"p1-v3", "product:1")
    queue.put(b"p2-v2", "product:2")
    queue.put(b"order-3")
    expected = [b"p1-v3", b"p2-v2", b"order-1", b"order-2", b"order-3"]
    assert queue.bytes == len(b"first") + sum(map(len, expected))  # replaced frames no longer count
    await socket.flush()
    assert socket.written == [b"first", *expected]  # each product's latest, where its first stood

    # A frame already written is not replaced: the next update for that key goes out too.
    queue.put(b"p1-v4", "product:1")
    await socket.flush()
    assert socket.written[-1] == b"p1-v4"
    await socket.flush()
    assert queue.bytes == 0 and overflow.calls == 0


async def test_frames_without_a_key_are_never_dropped_and_keep_their_order():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 1_000_000)
    frames = [f"order-event-{n}".encode() for n in range(200)]
    for n, item in enumerate(frames):
        queue.put(item)
        if n % 37 == 0:
            await socket.flush()
    while socket.pending:
        await socket.flush()
    assert socket.written == frames
    assert queue.bytes == 0 and overflow.calls == 0


async def test_over_budget_calls_on_overflow_once_and_writes_nothing_more():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 100)
    queue.put(frame("a", 40))  # in flight
    queue.put(frame("b", 60))  # 100 in all: at the budget is still fine
    assert overflow.calls == 0 and not queue.closed
    queue.put(frame("c", 1))  # 101
    assert overflow.calls == 1 and queue.closed
    queue.put(frame("d", 500))
    queue.put(frame("e", 1))
    await socket.flush()
    await socket.flush()
    assert overflow.calls == 1
    assert socket.written == [frame("a", 40)]  # what waited is dropped with the connection


async def test_a_conflated_update_does_not_overflow_by_replacing_a_waiting_one():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 100)
    queue.put(frame("a", 50))
    for n in range(20):  # 20 × 40 bytes put, one of them waiting at a time
        queue.put(frame(f"p{n}", 40), "product:1")
    assert overflow.calls == 0 and queue.bytes == 90
    await socket.flush()
    assert socket.written == [frame("a", 50), frame("p19", 40)]


async def test_a_frame_bigger_than_the_budget_goes_out_on_an_idle_socket():
    """A client that keeps up is not closed because one frame is large: it could never get
    past that frame, even resuming with `since` (the replay holds it too)."""
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 100)
    queue.put(frame("huge", 500))
    assert overflow.calls == 0 and socket.written == [frame("huge", 500)]
    await socket.flush()
    queue.put(b"next")
    assert socket.written[-1] == b"next"


async def test_a_burst_to_a_socket_that_takes_everything_at_once_is_not_an_overflow():
    """Frames handed over together (the Redis reader handles every message already read
    before it yields) go to a socket that takes each at once: the client is keeping up, and
    nothing is held in this process, so it must not be closed as a slow consumer. (Before
    3d17102 the socket counted as busy until the flush callback ran, next loop iteration,
    and the rest of the burst counted against the budget.)"""
    socket, overflow = FakeSocket(instant=True), Overflows()
    queue = SendQueue(socket.write, overflow, 100)
    burst = [frame(f"f{n}", 40) for n in range(5)]  # 200 bytes, twice the budget
    for item in burst:
        queue.put(item)
    await settle()
    assert overflow.calls == 0, "a client that keeps up was closed as a slow consumer"
    assert socket.written == burst


async def test_a_socket_that_closed_closes_the_queue_quietly():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 1000)
    queue.put(b"a")
    queue.put(b"b")
    socket.closed = True
    await socket.flush()  # the batch with b fails to write
    assert queue.closed and overflow.calls == 0
    queue.put(b"c")
    assert socket.written == [b"a"]


async def test_a_failed_flush_closes_the_queue():
    socket, overflow = FakeSocket(), Overflows()
    queue = SendQueue(socket.write, overflow, 1000)
    queue.put(b"a")
    queue.put(b"b")
    await socket.flush(error=OSError("reset"))
    assert queue.closed
    queue.put(b"c")
    await settle()
    assert socket.written == [b"a"] and overflow.calls == 0


# Realtime ------------------------------------------------------------------------------
class Listener:
    def __init__(self) -> None:
        self.got: list[tuple[str, int, bytes]] = []

    def deliver(self, key: str, seq: int, frame: bytes) -> None:
        self.got.append((key, seq, frame))

    def seqs(self, key: str | None = None) -> list[int]:
        return [seq for k, seq, _ in self.got if key is None or k == key]


def new_redis():
    if REDIS_URL and not os.environ.get("REALTIME_TESTS_FAKEREDIS"):
        import redis.asyncio as aredis

        return aredis.Redis.from_url(REDIS_URL, decode_responses=True)
    from fakeredis import FakeAsyncRedis

    return FakeAsyncRedis(decode_responses=True)


@contextlib.asynccontextmanager
async def realtime(*, history_size: int = 100, history_age_s: int = 3600, redis=None, clock=time.time):
    """A started Realtime under a fresh prefix; its keys are removed afterwards."""
    client = redis or new_redis()
    prefix = f"rtu-{uuid.uuid4().hex[:10]}:"
    rt = Realtime(client, prefix, history_size=history_size, history_age_s=history_age_s, clock=clock)
    await rt.start()
    try:
        yield rt
    finally:
        await stop(rt)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        if redis is None:
            await client.aclose()


async def stop(rt: Realtime) -> None:
    """rt.stop(), cancelling its reader again while a cancellation gets lost (see
    test_stop_ends_right_after_the_last_listener_left_on_the_embedded_redis)."""
    stopping = asyncio.ensure_future(rt.stop())
    while not stopping.done():
        await asyncio.wait([stopping], timeout=1)
        if not stopping.done():
            rt._task.cancel()
    stopping.result()


def payload(text: str) -> tuple[str, str]:
    """A frame `{"seq":N,"text":...}` as head and tail around the seq."""
    return '{"seq":', f',"text":{json.dumps(text)}}}'


@pytest.mark.timeout(30)
async def test_publish_takes_a_seq_per_channel_and_publishes_a_message_id_once():
    async with realtime() as rt:
        assert await rt.publish("m1", {"product:a": payload("1a"), "order:b": payload("1b")}) == {
            "product:a": 1, "order:b": 1}
        assert await rt.publish("m2", {"product:a": payload("2a")}) == {"product:a": 2}
        assert await rt.publish("m3", {"order:b": payload("3b"), ADMIN_ORDERS: payload("3c")}) == {
            "order:b": 2, ADMIN_ORDERS: 1}
        assert await rt.publish("m2", {"product:a": payload("2a again")}) == {}  # a redelivery
        assert await rt.publish("m3", {"order:b": payload("x"), ADMIN_ORDERS: payload("x")}) == {}
        # Once per message id and channel (a cluster cannot check one key from every slot):
        # a message id never seen on a channel is published there.
        assert await rt.publish("m3", {"order:b": payload("x"), "user:z": payload("3z")}) == {"user:z": 1}
        assert (await rt.current_seq("product:a"), await rt.current_seq("order:b"),
                await rt.current_seq(ADMIN_ORDERS), await rt.current_seq("user:z")) == (2, 2, 1, 1)
        _, frames = await rt.since("product:a", 0)
        assert [json.loads(f) for _, f in frames] == [{"seq": 1, "text": "1a"}, {"seq": 2, "text": "2a"}]


@pytest.mark.timeout(30)
async def test_event_and_notification_frames_are_built_around_the_seq():
    async with realtime() as rt:
        event = {"id": "e1", "type": "order.created", "data": {"order_id": "o1", "user_id": "u1", "note": "ünï"}}
        later = {"id": "e2", "type": "order.paid", "data": {"order_id": "o1", "user_id": "u1"}}
        await rt.publish_events([(event, ["order:o1", "user:u1", ADMIN_ORDERS]), (later, ["order:o1"]),
                                 (event, ["order:o1"])])  # the repeat of e1 is not published again
        await rt.publish_events([(later, ["order:o1"])])  # a redelivered batch
        for key, name, events in (("order:o1", "order:o1", [event, later]), ("user:u1", "user", [event]),
                                  (ADMIN_ORDERS, ADMIN_ORDERS, [event])):
            current, frames = await rt.since(key, 0)
            assert current == len(events)
            assert [json.loads(text) for _, text in frames] == [
                {"type": "event", "channel": name, "seq": n, "event": e} for n, e in enumerate(events, 1)]
        notification = {"id": "n1", "type": "order_shipped", "title": "Shipped", "body": "On its way"}
        assert await rt.publish_notification("u1", notification) == 2
        assert await rt.publish_notification("u1", notification) == 0  # a retried delivery
        _, [(_, text)] = await rt.since("user:u1", 1)
        assert json.loads(text) == {"type": "notification", "channel": "user", "seq": 2, "notification": notification}


@pytest.mark.timeout(30)
async def test_fan_out_takes_a_batch_on_flush_and_its_write_publishes_it_in_order_retried_or_not():
    from hub.live.realtime import FanOut

    async with realtime() as rt:
        fan_out = FanOut(rt, OWN)
        stock = event("inventory.changed", product_id="p1", available=4)
        created = event("order.created", order_id="o1", user_id="u1")
        foreign = event("order.shipped", source="urn:warehouse", order_id="o1", user_id="u1")
        paid = event("payment.succeeded", order_id="o1", user_id="u1")
        for item in (stock, created, foreign, paid):
            await fan_out.add(item)
        assert await rt.current_seq("order:o1") == 0  # nothing before the flush

        real_publish, calls = rt.publish_events, []

        async def failing_once(batch):
            calls.append(len(batch))
            if len(calls) == 1:
                raise ConnectionError("redis went away")
            await real_publish(batch)

        rt.publish_events = failing_once
        write = fan_out.flush()  # takes the batch: what is added next belongs to the next one
        assert await rt.current_seq("order:o1") == 0
        with pytest.raises(ConnectionError):
            await write()
        await write()  # the consumer retries the same write
        await fan_out.add(created)  # a redelivery: published already, not again
        await fan_out.flush()()
        assert calls == [3, 3, 1]  # one round trip per write; the foreign event had no channels
        assert await rt.current_seq("product:p1") == 1 and await rt.current_seq(ADMIN_ORDERS) == 1
        _, frames = await rt.since("order:o1", 0)
        assert [json.loads(text)["event"]["id"] for _, text in frames] == [created["id"], paid["id"]]
        _, frames = await rt.since("user:u1", 0)
        assert [json.loads(text)["event"]["id"] for _, text in frames] == [created["id"], paid["id"]]


@pytest.mark.timeout(30)
async def test_since_replays_what_history_holds_and_says_none_when_it_cannot():
    async with realtime(history_size=3) as rt:
        assert await rt.since("product:new", None) == (0, [])
        assert await rt.since("product:new", 0) == (0, [])
        assert await rt.since("product:new", 2) == (0, None)  # ahead of the channel: it started over
        for n in range(1, 6):
            await rt.publish(f"m{n}", {"product:a": payload(str(n))})
        assert await rt.since("product:a", None) == (5, [])
        assert await rt.since("product:a", 5) == (5, [])
        current, frames = await rt.since("product:a", 2)
        assert current == 5 and [seq for seq, _ in frames] == [3, 4, 5]
        assert [json.loads(text)["text"] for _, text in frames] == ["3", "4", "5"]
        assert [seq for seq, _ in (await rt.since("product:a", 4))[1]] == [5]
        assert await rt.since("product:a", 1) == (5, None)  # trimmed to the last 3
        assert await rt.since("product:a", 0) == (5, None)
        assert await rt.since("product:a", 6) == (5, None)
        assert await rt.since("product:a", 1000) == (5, None)
        assert await rt.redis.xlen(rt._stream("product:a")) == 3


@pytest.mark.timeout(30)
async def test_history_older_than_its_age_is_gone():
    clock = Clock()
    async with realtime(history_age_s=1, clock=clock) as rt:
        await rt.publish("m1", {"order:o": payload("1")})
        await rt.publish("m2", {"order:o": payload("2")})
        assert 0 < await rt.redis.pttl(rt._stream("order:o")) <= 1000
        clock.tick(1.3)
        await rt.publish("m3", {"order:o": payload("3")})
        assert await rt.since("order:o", 0) == (3, None)
        assert await rt.since("order:o", 1) == (3, None)
        current, frames = await rt.since("order:o", 2)
        assert current == 3 and [seq for seq, _ in frames] == [3]


@pytest.mark.timeout(30)
async def test_entries_older_than_the_age_are_trimmed_from_a_stream_still_in_use():
    """Publishing every 1.2 s keeps the stream alive (its expiry is pushed back each time),
    so only the trim by age removes the old entries."""
    clock = Clock()
    async with realtime(history_age_s=2, clock=clock) as rt:
        await rt.publish("m1", {"order:o": payload("1")})
        clock.tick(1.2)
        await rt.publish("m2", {"order:o": payload("2")})
        clock.tick(1.2)
        await rt.publish("m3", {"order:o": payload("3")})
        assert await rt.redis.xlen(rt._stream("order:o")) == 2
        assert await rt.since("order:o", 0) == (3, None)
        assert [seq for seq, _ in (await rt.since("order:o", 1))[1]] == [2, 3]


@pytest.mark.timeout(30)
async def test_join_returns_once_subscribed_so_a_publish_right_after_is_delivered():
    async with realtime() as rt:
        publisher = Realtime(rt.redis, rt.prefix, history_size=10, history_age_s=60)  # as another process would
        for n in range(20):  # a fresh channel each time: a first join, a new Redis subscription
            listener = Listener()
            key = f"product:p{n}"
            await rt.join(key, listener)
            await publisher.publish(f"m{n}", {key: payload(str(n))})
            await until(lambda: listener.got, what=f"delivery on {key}")
            assert listener.seqs() == [1]


@pytest.mark.timeout(30)
async def test_join_waits_for_the_subscription_to_be_confirmed():
    async with realtime() as rt:
        rt._task.cancel()  # the reader that sees Redis confirm subscriptions
        await asyncio.gather(rt._task, return_exceptions=True)
        first, second = Listener(), Listener()
        joins = [asyncio.ensure_future(rt.join("order:o", first)), asyncio.ensure_future(rt.join("order:o", second))]
        await asyncio.sleep(0.5)
        assert not any(join.done() for join in joins), "join returned before Redis confirmed the subscription"
        rt._task = asyncio.ensure_future(rt._read())
        await asyncio.wait_for(asyncio.gather(*joins), 5)
        await rt.publish("m1", {"order:o": payload("1")})
        await until(lambda: first.got and second.got, what="delivery to both")
        assert first.seqs() == second.seqs() == [1]


@pytest.mark.timeout(30)
async def test_leave_stops_delivery_and_the_last_one_out_unsubscribes():
    async with realtime() as rt:
        one, two, elsewhere = Listener(), Listener(), Listener()
        await rt.join("product:a", one)
        await rt.join("product:a", two)
        await rt.join("product:b", elsewhere)
        await rt.publish("m1", {"product:a": payload("1"), "product:b": payload("1")})
        await until(lambda: one.got and two.got and elsewhere.got, what="first deliveries")
        await rt.leave("product:a", one)
        await rt.leave("product:a", Listener())  # never joined: nothing happens
        await rt.publish("m2", {"product:a": payload("2"), "product:b": payload("2")})
        await until(lambda: len(two.got) == 2 and len(elsewhere.got) == 2, what="second deliveries")
        await rt.leave("product:a", two)
        assert "product:a" not in rt.local
        channel = rt._pubsub_channel("product:a")
        deadline = time.monotonic() + 5
        while dict(await rt.redis.pubsub_numsub(channel))[channel]:
            assert time.monotonic() < deadline, "still subscribed in Redis"
            await asyncio.sleep(0.05)
        await rt.publish("m3", {"product:a": payload("3"), "product:b": payload("3")})
        await until(lambda: len(elsewhere.got) == 3, what="third delivery elsewhere")
        await asyncio.sleep(0.2)
        assert one.seqs() == [1] and two.seqs() == [1, 2] and elsewhere.seqs() == [1, 2, 3]


@pytest.mark.timeout(30)
async def test_a_join_whose_listener_left_before_the_confirmation_still_returns():
    """A socket that closes while its first subscription to a channel is being confirmed
    leaves the channel (Session.close): the join must not wait forever, or every such
    close leaks the handler's coroutine.

    Fails while `leave` drops the pending confirmation: the reader then finds no waiter
    for the confirmation and the join is never released."""
    async with realtime() as rt:
        listener = Listener()
        join = asyncio.ensure_future(rt.join("order:o", listener))
        await asyncio.sleep(0)  # the join has sent SUBSCRIBE and waits for the confirmation
        await rt.leave("order:o", listener)
        done, _ = await asyncio.wait([join], timeout=3)
        join.cancel()
        assert done, "join never returned after its listener left"
        assert "order:o" not in rt.local


@pytest.mark.timeout(30)
async def test_stop_ends_right_after_the_last_listener_left_on_the_embedded_redis():
    """Without REDIS_URL the hub runs on fakeredis, whose asyncio client waits for replies
    with asyncio.wait_for: on Python 3.11 that swallows a cancellation arriving together with
    a reply (here, the unsubscribe's). `stop` cancels the reader once and waits for it.

    Fails while the reader only ends by that one cancellation: it reads on, and `stop`
    waits forever."""
    from fakeredis import FakeAsyncRedis

    client = FakeAsyncRedis(decode_responses=True)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(3):
            rt = Realtime(client, f"rtu-{uuid.uuid4().hex[:10]}:", history_size=10, history_age_s=60)
            await rt.start()
            listener = Listener()
            await rt.join("product:p", listener)
            rescued = []

            def rescue() -> None:  # after 3 s, cancel the reader again (and again), noting it
                if not rt._task.done():
                    rescued.append(True)
                    rt._task.cancel()
                    loop.call_later(0.5, rescue)

            handle = loop.call_later(3, rescue)
            await rt.leave("product:p", listener)
            await rt.stop()  # right away, as a shutdown right after the last socket closed would
            handle.cancel()
            assert not rescued, "Realtime.stop did not return until its reader was cancelled again"
    finally:
        await client.aclose()


# Session -------------------------------------------------------------------------------
class Recorder:
    """Stands in for the SendQueue: records what the session queued, with its conflation key."""

    def __init__(self) -> None:
        self.items: list[tuple[dict, str | None]] = []
        self.closed = False

    def put(self, frame: bytes, conflate: str | None = None) -> None:
        self.items.append((json.loads(frame), conflate))

    def close(self) -> None:
        self.closed = True

    @property
    def frames(self) -> list[dict]:
        return [item for item, _ in self.items]

    def summary(self) -> list:
        return [(f["type"], f.get("seq"), f.get("recovered", f.get("text"))) for f in self.frames]


def session_on(rt: Realtime, owners: dict[str, str] | None = None, caller: Caller | None = None) -> Session:
    async def order_owner(order_id: str) -> str | None:
        return (owners or {}).get(order_id)

    session = Session(rt, Recorder(), order_owner=order_owner)
    session.caller = caller
    return session


def event_payload(channel: str, text: str) -> tuple[str, str]:
    return f'{{"type":"event","channel":"{channel}","seq":', f',"text":{json.dumps(text)}}}'


async def publish(rt: Realtime, key: str, text: str) -> int:
    return (await rt.publish(uuid.uuid4().hex, {key: event_payload(client_name(key), text)}))[key]


@pytest.mark.timeout(30)
async def test_a_missed_live_message_is_filled_from_history_in_order():
    async with realtime() as rt:
        session = session_on(rt)
        await publish(rt, "product:p", "before")
        await session.subscribe("product:p", None)
        await publish(rt, "product:p", "live")
        await until(lambda: len(session.send.frames) == 2, what="live frame")

        rt.local["product:p"].discard(session)  # as if the Redis subscription dropped for a while
        await publish(rt, "product:p", "missed 1")
        await publish(rt, "product:p", "missed 2")
        rt.local["product:p"].add(session)
        await publish(rt, "product:p", "after")
        await until(lambda: len(session.send.frames) == 5, what="gap filled")
        await asyncio.sleep(0.2)
        assert session.send.summary() == [("subscribed", 1, False), ("event", 2, "live"), ("event", 3, "missed 1"),
                                          ("event", 4, "missed 2"), ("event", 5, "after")]
        assert session.last["product:p"] == 5 and "product:p" not in session.waiting
        await session.close()


@pytest.mark.timeout(30)
async def test_a_gap_history_cannot_fill_is_answered_with_subscribed_not_recovered():
    async with realtime(history_size=2) as rt:
        session = session_on(rt, caller=ALICE)
        await session.subscribe("user", None)
        rt.local["user:alice"].discard(session)
        for n in range(3):
            await publish(rt, "user:alice", f"missed {n}")
        rt.local["user:alice"].add(session)
        await publish(rt, "user:alice", "after")
        await until(lambda: len(session.send.frames) >= 2, what="answer to the gap")
        await asyncio.sleep(0.2)
        # The client reloads by REST; it is live again from the seq it was told.
        assert session.send.summary() == [("subscribed", 0, False), ("subscribed", 4, False)]
        assert session.send.frames[1]["channel"] == "user"
        await publish(rt, "user:alice", "next")
        await until(lambda: len(session.send.frames) == 3, what="live again")
        assert session.send.summary()[-1] == ("event", 5, "next")
        await session.close()


@pytest.mark.timeout(30)
async def test_a_frame_at_or_below_the_last_seq_is_dropped_and_only_product_frames_conflate():
    async with realtime() as rt:
        session = session_on(rt, owners={"o1": "alice"}, caller=ALICE)
        for _ in range(3):
            await publish(rt, "product:p", "old")
        await session.subscribe("product:p", None)
        await session.subscribe("order:o1", None)
        assert session.last == {"product:p": 3, "order:o1": 0}
        session.deliver("product:p", 3, b'{"type":"event","seq":3}')  # a repeat of what it had
        session.deliver("product:p", 1, b'{"type":"event","seq":1}')
        session.deliver("order:o1", 0, b'{"type":"event","seq":0}')
        assert len(session.send.items) == 2  # just the two `subscribed`
        session.deliver("product:p", 4, b'{"type":"event","seq":4}')
        session.deliver("product:p", 4, b'{"type":"event","seq":4}')
        session.deliver("order:o1", 1, b'{"type":"event","seq":1}')
        assert session.send.items[2:] == [({"type": "event", "seq": 4}, "product:p"),
                                          ({"type": "event", "seq": 1}, None)]
        assert session.last == {"product:p": 4, "order:o1": 1}
        await session.close()


@pytest.mark.timeout(30)
async def test_subscribe_with_since_replays_then_live_frames_held_meanwhile_follow_once():
    async with realtime() as rt:
        for n in range(1, 4):
            await publish(rt, "order:o1", f"e{n}")
        session = session_on(rt, owners={"o1": "alice"}, caller=ALICE)
        real_since = rt.since

        async def since_then_more(key, since):
            result = await real_since(key, since)
            await publish(rt, key, "e4")  # published after the read: arrives live, held
            await until(lambda: session.waiting.get(key), what="live frame held")
            return result

        rt.since = since_then_more
        await session.subscribe("order:o1", 1)
        rt.since = real_since
        assert session.send.summary() == [("subscribed", 3, True), ("event", 2, "e2"), ("event", 3, "e3"),
                                          ("event", 4, "e4")]

        # The same, the other way round: published before the read, so in the replay and live.
        other = session_on(rt, owners={"o1": "alice"}, caller=ALICE)

        async def more_then_since(key, since):
            await publish(rt, key, "e5")
            await until(lambda: other.waiting.get(key), what="live frame held")
            return await real_since(key, since)

        rt.since = more_then_since
        await other.subscribe("order:o1", 3)
        rt.since = real_since
        assert other.send.summary() == [("subscribed", 5, True), ("event", 4, "e4"), ("event", 5, "e5")]
        await session.close()
        await other.close()


@pytest.mark.timeout(30)
async def test_unsubscribe_while_the_subscribe_reads_history_leaves_nothing_behind():
    async with realtime() as rt:
        session = session_on(rt)
        await publish(rt, "product:p", "e1")
        reading, release = asyncio.Event(), asyncio.Event()
        real_since = rt.since

        async def slow_since(key, since):
            reading.set()
            await release.wait()
            return await real_since(key, since)

        rt.since = slow_since
        subscribing = asyncio.ensure_future(session.subscribe("product:p", 0))
        await asyncio.wait_for(reading.wait(), 5)
        await session.unsubscribe("product:p")
        release.set()
        await asyncio.wait_for(subscribing, 5)
        rt.since = real_since
        assert session.send.frames == []  # no `subscribed`, no replay
        assert session.names == {} and session.last == {} and session.waiting == {}
        assert "product:p" not in rt.local
        await publish(rt, "product:p", "e2")
        await asyncio.sleep(0.3)
        assert session.send.frames == []


@pytest.mark.timeout(30)
async def test_a_socket_closing_during_its_first_subscribe_does_not_leave_the_subscribe_hanging():
    """Session.close (the socket closed) while `subscribe` waits for Redis to confirm: the
    subscribe must end. Fails with Realtime.leave dropping the pending confirmation (see
    test_a_join_whose_listener_left_before_the_confirmation_still_returns)."""
    async with realtime() as rt:
        session = session_on(rt)
        subscribing = asyncio.ensure_future(session.subscribe("product:p", None))
        await asyncio.sleep(0)
        await session.close()
        done, _ = await asyncio.wait([subscribing], timeout=3)
        subscribing.cancel()
        assert done, "subscribe still waiting after the session closed"
        assert session.send.frames == [] and "product:p" not in rt.local


@pytest.mark.timeout(30)
async def test_refused_subscriptions_change_nothing():
    async with realtime() as rt:
        session = session_on(rt, owners={"o1": "bob"}, caller=ALICE)
        for channel, since, error in (("order:o1", None, Forbidden), ("order:nope", None, Forbidden),
                                      (ADMIN_ORDERS, None, Forbidden), ("product:p", -1, Invalid),
                                      ("product:p", True, Invalid), ("product:p", "3", Invalid),
                                      ("product:p", 1.5, Invalid), ("bogus", None, Invalid)):
            with pytest.raises(error):
                await session.subscribe(channel, since)
        anonymous = session_on(rt)
        for channel in ("user", ADMIN_ORDERS, "order:o1"):
            with pytest.raises(Forbidden):
                await anonymous.subscribe(channel, None)
        assert session.names == anonymous.names == {} and rt.local == {}
        assert session.send.frames == anonymous.send.frames == []

        admin = session_on(rt, caller=ADMIN, owners={"o1": "bob"})
        await admin.subscribe("order:o1", None)
        await admin.subscribe(ADMIN_ORDERS, None)
        assert set(admin.names) == {"order:o1", ADMIN_ORDERS}
        await admin.close()


@pytest.mark.timeout(30)
async def test_a_subscribe_that_cannot_read_history_leaves_nothing_behind():
    async with realtime() as rt:
        session = session_on(rt)

        async def unreachable(key, since):
            raise ConnectionError("redis down")

        real_since, rt.since = rt.since, unreachable
        with pytest.raises(ConnectionError):
            await session.subscribe("product:p", 3)
        assert session.names == {} and session.waiting == {} and "product:p" not in rt.local
        rt.since = real_since
        await session.subscribe("product:p", None)  # and the client can try again
        assert session.send.summary() == [("subscribed", 0, False)]
        await session.close()


@pytest.mark.timeout(60)
async def test_at_most_max_subscriptions_per_session_and_resubscribing_is_not_one_more():
    async with realtime() as rt:
        session = session_on(rt)
        for n in range(MAX_SUBSCRIPTIONS):
            await session.subscribe(f"product:p{n}", None)
        with pytest.raises(Invalid) as info:
            await session.subscribe("product:one-too-many", None)
        assert info.value.code == "too_many_subscriptions"
        await session.subscribe("product:p0", None)  # already joined: fine
        await session.unsubscribe("product:p1")
        await session.subscribe("product:one-more", None)
        assert len(session.names) == MAX_SUBSCRIPTIONS
        await session.close()
        assert rt.local == {}


# domain/feeds.py -----------------------------------------------------------
def event(event_type: str, source: str = OWN, **data) -> dict:
    return {"specversion": "1.0", "id": uuid.uuid4().hex, "source": source, "type": event_type, "data": data}


@pytest.mark.parametrize("given, expected", [
    (event("inventory.changed", product_id="p1", available=3), ["product:p1"]),
    (event("inventory.low", product_id="p1"), ["product:p1"]),
    (event("inventory.changed", source="urn:warehouse", product_id="p1"), ["product:p1"]),
    (event("inventory.changed", available=3), []),
    (event("inventory.changed", product_id=7), []),
    (event("order.created", order_id="o1", user_id="u1"), ["order:o1", "user:u1", ADMIN_ORDERS]),
    (event("order.shipped", order_id="o1", user_id="u1", product_id="p1"), ["order:o1", "user:u1", ADMIN_ORDERS]),
    (event("order.created", order_id="o1"), ["order:o1", ADMIN_ORDERS]),
    (event("order.created", order_id=5, user_id=["u1"]), [ADMIN_ORDERS]),
    (event("payment.succeeded", order_id="o1", user_id="u1"), ["order:o1", "user:u1"]),
    (event("payment.failed", order_id="o1"), ["order:o1"]),
    (event("points.awarded", user_id="u1", order_id="o1"), ["order:o1", "user:u1"]),
    (event("points.expired", user_id="u1"), ["user:u1"]),
    (event("order.shipped", source="urn:warehouse", order_id="o1", user_id="u1"), []),
    (event("payment.succeeded", source="urn:stripe", order_id="o1", user_id="u1"), []),
    (event("points.awarded", source="urn:loyalty", user_id="u1"), []),
    (event("notification.requested", user_id="u1"), []),
    (event("customer.updated", user_id="u1"), []),
    ({"id": "x", "source": OWN, "type": "order.created"}, [ADMIN_ORDERS]),  # no data at all
])
def test_channels_for_event(given, expected):
    assert feeds_for_event(given, OWN) == expected


@pytest.mark.parametrize("name, parsed", [
    ("product:abc", ("product", "abc")),
    ("order:A-b_9", ("order", "A-b_9")),
    ("product:" + "x" * 64, ("product", "x" * 64)),
    ("user", ("user", None)),
    ("admin:orders", ("admin:orders", None)),
])
def test_parse_channel_accepts(name, parsed):
    assert parse_feed(name) == parsed


@pytest.mark.parametrize("name", [
    "product:", "order:", "product:" + "x" * 65, "product:a b", "product:a/b", "product:a:b", "product:a.b",
    "order:é", "product:a\n", "product:*", "Product:a", "products:a", "user:alice", "users", "admin",
    "admin:users", "admin:orders:x", "product", "", None, 5, ["user"], {"channel": "user"},
])
def test_parse_channel_refuses(name):
    with pytest.raises(Invalid) as info:
        parse_feed(name)
    assert info.value.code == "invalid_channel"


def test_channel_keys_and_who_may_join():
    assert feed_key("product", "p1", None) == "product:p1"
    assert feed_key("product", "p1", ALICE) == "product:p1"
    assert feed_key("user", None, ALICE) == "user:alice"
    assert feed_key("user", None, ADMIN) == "user:root"
    assert feed_key(ADMIN_ORDERS, None, ADMIN) == ADMIN_ORDERS
    assert feed_key("order", "o1", ALICE) == "order:o1"
    for kind, ident, caller in (("user", None, None), (ADMIN_ORDERS, None, None), (ADMIN_ORDERS, None, ALICE),
                                ("order", "o1", None)):
        with pytest.raises(Forbidden):
            feed_key(kind, ident, caller)


def test_may_watch_order_is_the_owner_or_an_admin_and_nobody_for_no_order():
    assert may_watch_order(ALICE, "alice")
    assert not may_watch_order(BOB, "alice")
    assert may_watch_order(ADMIN, "alice")
    assert not may_watch_order(ALICE, None)
    assert not may_watch_order(ADMIN, None)  # the same answer as for someone else's: no existence leak


def test_client_names_and_conflation():
    assert client_name("user:alice") == "user"
    assert [client_name(k) for k in ("product:p", "order:o", ADMIN_ORDERS)] == ["product:p", "order:o", ADMIN_ORDERS]
    assert conflatable("product:p")
    assert not any(conflatable(k) for k in ("order:o", "user:alice", ADMIN_ORDERS))
