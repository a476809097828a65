"""The realtime gateway end to end (CONTRACT §4): real WebSocket clients
against a hub started in-process, events coming the real way (REST → Kafka → the
hub-realtime consumer → Redis → every process's sockets).

Who may join which channel, live events with their per-channel seq, recovery with `since`
(and when it cannot recover), X-Channel-Seq on REST reads, garbage and abuse that leave other
clients alone, acks of live notifications, token expiry, connection limits, and the gateway's
handling of a Redis subscription that drops or repeats a message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

from config.settings import load_settings
from hub.wiring.server import HubServer
from tests.conftest import Api, placed
from tests.notify_e2e import customer, deliveries, eventually, inbox_item, quietly, request_notification

pytestmark = pytest.mark.timeout(90)

LIVE = ("event", "notification")  # frames the hub sends unasked; the others answer a frame


class Ws:
    """A WebSocket client of the hub that collects every frame it receives.

    `reply()` gives the answers to the client's own frames in order (everything but
    event/notification frames); `live(channel)` the event and notification frames of a channel.
    """

    def __init__(self, conn) -> None:
        self.conn = conn
        self.frames: list[dict] = []
        self.closed = asyncio.Event()
        self._answered = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, port: int, token: str | None = None) -> "Ws":
        query = f"?token={token}" if token else ""
        return cls(await websocket_connect(f"ws://127.0.0.1:{port}/ws{query}"))

    async def _read(self) -> None:
        while True:
            message = await self.conn.read_message()
            if message is None:
                self.closed.set()
                return
            self.frames.append(json.loads(message))

    @property
    def close_code(self):
        return self.conn.close_code

    @property
    def close_reason(self):
        return self.conn.close_reason

    def answers(self) -> list[dict]:
        return [f for f in self.frames if f.get("type") not in LIVE]

    def live(self, channel: str | None = None) -> list[dict]:
        return [f for f in self.frames if f.get("type") in LIVE and (channel is None or f["channel"] == channel)]

    def events(self, channel: str) -> list[dict]:
        return [f for f in self.live(channel) if f["type"] == "event"]

    async def send(self, frame) -> None:
        await self.conn.write_message(frame if isinstance(frame, (str, bytes)) else json.dumps(frame),
                                      binary=isinstance(frame, bytes))

    async def reply(self, timeout: float = 10.0) -> dict:
        """The next answer not yet taken."""
        def probe():
            answers = self.answers()
            assert len(answers) > self._answered, f"no answer yet; closed={self.closed.is_set()} frames={self.frames}"
            return answers[self._answered]
        answer = await eventually(probe, timeout, interval=0.01, what="an answer frame")
        self._answered += 1
        return answer

    async def request(self, frame) -> dict:
        await self.send(frame)
        return await self.reply()

    async def subscribe(self, channel, **extra) -> dict:
        return await self.request({"op": "subscribe", "channel": channel, **extra})

    async def pong(self) -> None:
        assert await self.request({"op": "ping"}) == {"type": "pong"}

    async def wait_live(self, channel: str, count: int, timeout: float = 15.0) -> list[dict]:
        """The channel's live frames once there are at least `count`."""
        def probe():
            found = self.live(channel)
            assert len(found) >= count, f"{len(found)} of {count} frames on {channel}: {found}"
            return found
        return await eventually(probe, timeout, interval=0.02, what=f"{count} frames on {channel}")

    async def wait_closed(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    def close(self) -> None:
        self.conn.close()


def port_of(api: Api) -> int:
    return int(api.base_url.rsplit(":", 1)[1])


def seqs(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in frames]


def rising_from(frames: list[dict], start: int) -> bool:
    """Each frame's seq is one more than the one before, starting after `start`."""
    return seqs(frames) == list(range(start + 1, start + 1 + len(frames)))


async def channel_seq(api: Api, path: str, token: str | None = None) -> int:
    r = await api.call("GET", path, token=token)
    assert r.status == 200, r
    return int(r.headers["X-Channel-Seq"])


async def settled_seq(api: Api, path: str, expected: int, token: str | None = None) -> int:
    """Waits until X-Channel-Seq of `path` reads `expected` (the events so far are all published)."""
    async def probe():
        seq = await channel_seq(api, path, token)
        assert seq == expected, f"X-Channel-Seq {seq}, waiting for {expected}"
        return True
    await eventually(probe, 15, interval=0.05, what=f"X-Channel-Seq {expected} on {path}")
    return expected


async def restock(api: Api, admin: str, product_id: str, delta: int = 1) -> dict:
    r = await api.call("POST", f"/api/v1/products/{product_id}/stock", {"delta": delta}, token=admin)
    assert r.status == 200, r
    return r.data


async def transition(api: Api, admin: str, order_id: str, status: str) -> dict:
    r = await api.call("POST", f"/api/v1/orders/{order_id}/transitions", {"status": status}, token=admin)
    assert r.status == 200, r
    return r.data


async def fresh_product(api: Api, admin: str, **fields) -> dict:
    """A product whose `created` stock event is already on its channel (seq 1)."""
    product = await api.product(admin, **fields)
    await settled_seq(api, f"/api/v1/products/{product['id']}", 1)
    return product


@contextlib.asynccontextmanager
async def hub_with(hub_env: dict, **overrides):
    """A hub of its own with some settings changed, and its API client."""
    server = HubServer(load_settings(dict(hub_env, **overrides)))
    await server.start()
    try:
        yield server, Api(f"http://127.0.0.1:{server.port}")
    finally:
        await server.stop()


def is_subscribed(frame: dict, channel: str, *, recovered: bool = False, seq: int | None = None) -> bool:
    return (frame.get("type") == "subscribed" and frame.get("channel") == channel
            and frame.get("recovered") is recovered
            and isinstance(frame.get("seq"), int) and (seq is None or frame["seq"] == seq))


def error_code(frame: dict) -> str | None:
    return frame.get("code") if frame.get("type") == "error" and isinstance(frame.get("message"), str) else None


# 1. Who may join what ----------------------------------------------------------------------

async def test_authorization_matrix_and_refusals_change_nothing(api, hub_server):
    admin = await api.admin_token()
    product = await fresh_product(api, admin)
    pid = product["id"]
    ann, bob = await api.register(), await api.register()
    order = await placed(api, ann["access_token"], pid)
    oid = order["id"]
    # The order's own events are out before anyone subscribes: what follows is all new.
    await settled_seq(api, f"/api/v1/products/{pid}", 2)
    await settled_seq(api, f"/api/v1/orders/{oid}", 1, ann["access_token"])
    port = hub_server.port
    clients = {
        "anonymous": await Ws.open(port),
        "owner": await Ws.open(port, ann["access_token"]),
        "other": await Ws.open(port, bob["access_token"]),
        "admin": await Ws.open(port, admin),
    }
    allowed = {
        "anonymous": {f"product:{pid}"},
        "owner": {f"product:{pid}", f"order:{oid}", "user"},
        "other": {f"product:{pid}", "user"},
        "admin": {f"product:{pid}", f"order:{oid}", "user", "admin:orders"},
    }
    try:
        for who, ws in clients.items():
            for channel in (f"product:{pid}", f"order:{oid}", "user", "admin:orders"):
                answer = await ws.subscribe(channel)
                if channel in allowed[who]:
                    assert is_subscribed(answer, channel), (who, channel, answer)
                else:
                    assert error_code(answer) == "forbidden", (who, channel, answer)

        # Someone else's order and an order that does not exist look the same.
        other = clients["other"]
        theirs = await other.subscribe(f"order:{oid}")
        missing = await other.subscribe(f"order:{uuid.uuid4().hex}")
        assert error_code(theirs) == "forbidden"
        assert {**missing, "channel": None} == {**theirs, "channel": None}  # each names its own channel
        for who in ("owner", "admin"):
            assert error_code(await clients[who].subscribe(f"order:{uuid.uuid4().hex}")) == "forbidden", who

        # Malformed channels and subscribes: an error, for anyone.
        for ws in clients.values():
            for channel in (None, 42, ["user"], "", "product:", "product:a/b", "order:" + "x" * 65, "users",
                            "admin:all", "user:" + ann["user"]["id"], f"PRODUCT:{pid}", f"product:{pid} "):
                assert error_code(await ws.subscribe(channel)) == "invalid_channel", channel
            assert error_code(await ws.request({"op": "subscribe"})) == "invalid_channel"

        # Nothing changed: every connection still works and hears exactly its channels.
        for ws in clients.values():
            await ws.pong()
        await restock(api, admin, pid, 5)
        await transition(api, admin, oid, "confirmed")
        for who, ws in clients.items():
            [event] = await ws.wait_live(f"product:{pid}", 1)
            assert event["event"]["type"] == "inventory.changed" and event["event"]["data"]["available"] == 104, who
        for who in ("owner", "admin"):
            [event] = await clients[who].wait_live(f"order:{oid}", 1)
            assert event["event"]["type"] == "order.confirmed" and event["event"]["data"]["order_id"] == oid, who
        await clients["admin"].wait_live("admin:orders", 1)
        owner_user = await clients["owner"].wait_live("user", 1)
        assert all(f["channel"] == "user" for f in owner_user)

        # Bob orders too: each `user` channel carries its own user's orders only.
        bobs = await placed(api, bob["access_token"], pid)
        await clients["other"].wait_live("user", 1)
        await clients["admin"].wait_live("admin:orders", 2)
        await asyncio.sleep(1.0)  # let anything misrouted arrive too

        def order_ids(frames):
            return {(f.get("event") or f.get("notification"))["data"].get("order_id") for f in frames}
        assert order_ids(clients["owner"].live("user")) == {oid}
        assert order_ids(clients["other"].live("user")) == {bobs["id"]}
        assert order_ids(clients["admin"].live("user")) == set()  # the admin's own channel: not other users'
        assert clients["other"].live(f"order:{oid}") == [] and clients["anonymous"].live(f"order:{oid}") == []
        assert {f["event"]["data"]["order_id"] for f in clients["admin"].live("admin:orders")} == {oid, bobs["id"]}
        for who in ("anonymous", "owner", "other"):
            assert clients[who].live("admin:orders") == [], who
        for ws in clients.values():
            await ws.pong()
            assert not ws.closed.is_set()
    finally:
        for ws in clients.values():
            ws.close()


# 2. Live events ----------------------------------------------------------------------------

async def test_an_order_and_its_transitions_reach_every_channel_with_rising_seq(api, hub_server):
    admin = await api.admin_token()
    product = await fresh_product(api, admin, stock=50)
    pid = product["id"]
    ann = await api.register()
    owner = await Ws.open(hub_server.port, ann["access_token"])
    staff = await Ws.open(hub_server.port, admin)
    try:
        start = {}
        for ws, channel in ((owner, f"product:{pid}"), (owner, "user"), (staff, "admin:orders")):
            answer = await ws.subscribe(channel)
            assert is_subscribed(answer, channel), answer
            start[channel] = answer["seq"]
        assert start[f"product:{pid}"] == 1  # the product's creation

        order = await placed(api, ann["access_token"], pid, quantity=3)
        oid = order["id"]

        [stock] = await owner.wait_live(f"product:{pid}", 1)
        assert stock["type"] == "event" and stock["seq"] == 2
        assert stock["event"]["type"] == "inventory.changed"
        assert stock["event"]["data"]["product_id"] == pid and stock["event"]["data"]["available"] == 47
        assert stock["event"]["specversion"] == "1.0" and stock["event"]["id"]

        # A price change is public news on the product's channel too (CONTRACT §4).
        r = await api.call("PATCH", f"/api/v1/products/{pid}", {"price": "12.34"}, token=admin)
        assert r.status == 200, r
        price = (await owner.wait_live(f"product:{pid}", 2))[1]
        assert price["seq"] == 3 and price["event"]["data"]["price"] == "12.34"
        assert price["event"]["data"]["available"] == 47

        created = await eventually(lambda: [f for f in owner.events("user") if f["event"]["type"] == "order.created"],
                                   15, what="order.created on user")
        assert created[0]["event"]["data"]["order_id"] == oid
        assert created[0]["event"]["data"]["user_id"] == ann["user"]["id"]
        [admin_created] = await staff.wait_live("admin:orders", 1)
        assert admin_created["event"]["type"] == "order.created" and admin_created["event"]["data"]["order_id"] == oid
        assert admin_created["event"]["id"] == created[0]["event"]["id"]  # the same CloudEvent

        # The order channel from its start: order.created is replayed.
        answer = await owner.subscribe(f"order:{oid}", since=0)
        assert is_subscribed(answer, f"order:{oid}", recovered=True), answer
        [first] = await owner.wait_live(f"order:{oid}", 1)
        assert first["seq"] == 1 and first["event"]["type"] == "order.created"

        await transition(api, admin, oid, "confirmed")
        await transition(api, admin, oid, "processing")
        frames = await owner.wait_live(f"order:{oid}", 3)
        assert [f["event"]["type"] for f in frames] == ["order.created", "order.confirmed", "order.processing"]
        assert seqs(frames) == [1, 2, 3]
        assert all(f["channel"] == f"order:{oid}" and f["event"]["data"]["order_id"] == oid for f in frames)
        admin_frames = await staff.wait_live("admin:orders", 3)
        assert [f["event"]["type"] for f in admin_frames] == ["order.created", "order.confirmed", "order.processing"]

        await eventually(lambda: [f for f in owner.events("user") if f["event"]["type"] == "order.processing"], 15,
                         what="order.processing on user")
        await asyncio.sleep(0.5)
        # One more per message within each channel (the user channel interleaves its notifications).
        for ws, channel in ((owner, f"product:{pid}"), (owner, "user"), (staff, "admin:orders")):
            assert rising_from(ws.live(channel), start[channel]), (channel, seqs(ws.live(channel)))
        assert rising_from(owner.live(f"order:{oid}"), 0)
        assert all(f["channel"] == "user" for f in owner.live("user"))
    finally:
        owner.close()
        staff.close()


async def test_a_burst_of_events_reaches_its_channel_whole_and_in_order(hub_server):
    """Events that come in several fetches (hub-realtime publishes one fetch while it handles
    the next) reach the channel once each, in the order they were produced, seq rising by one."""
    pid = uuid.uuid4().hex
    reader = await Ws.open(hub_server.port)
    try:
        answer = await reader.subscribe(f"product:{pid}")
        assert is_subscribed(answer, f"product:{pid}", seq=0), answer
        kafka = hub_server.hub.kafka
        count = 600  # three fetches of 200 at least
        sent = []
        for n in range(count):
            event = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "urn:test:warehouse",
                     "type": "inventory.changed", "datacontenttype": "application/json",
                     "data": {"product_id": pid, "available": n}}
            sent.append(await kafka.producer.send(kafka.topic("inventory"), json.dumps(event).encode(),
                                                  key=pid.encode()))
        await asyncio.gather(*sent)
        frames = await reader.wait_live(f"product:{pid}", count, timeout=30)
        assert [f["event"]["data"]["available"] for f in frames] == list(range(count))
        assert rising_from(frames, 0)
    finally:
        reader.close()


# 3. Recovery -------------------------------------------------------------------------------

async def test_reconnect_with_since_replays_exactly_what_was_missed_then_goes_live(api, hub_server):
    admin = await api.admin_token()
    product = await fresh_product(api, admin, stock=100)
    pid, channel, path = product["id"], f"product:{product['id']}", f"/api/v1/products/{product['id']}"
    ws = await Ws.open(hub_server.port)
    answer = await ws.subscribe(channel)
    seen = answer["seq"]
    assert seen == 1
    ws.close()
    await ws.wait_closed()

    for _ in range(20):
        await restock(api, admin, pid)
    await settled_seq(api, path, seen + 20)

    ws = await Ws.open(hub_server.port)
    try:
        assert is_subscribed(await ws.subscribe(channel, since=seen), channel, recovered=True, seq=seen + 20)
        replay = await ws.wait_live(channel, 20)
        assert seqs(replay) == list(range(seen + 1, seen + 21))
        assert [f["event"]["data"]["available"] for f in replay] == list(range(101, 121))
        assert ws.frames[1:] == replay  # right after `subscribed`, nothing else

        await restock(api, admin, pid)
        frames = await ws.wait_live(channel, 21)
        assert frames[20]["seq"] == seen + 21 and frames[20]["event"]["data"]["available"] == 121
        await quietly(0.5, lambda: len(ws.frames) == 22)

        # since ahead of the channel: not recovered, nothing replayed.
        late = await Ws.open(hub_server.port)
        try:
            assert is_subscribed(await late.subscribe(channel, since=seen + 1000), channel, recovered=False,
                                 seq=seen + 21)
            # since == the current seq: recovered, nothing to replay.
            assert is_subscribed(await late.subscribe(channel, since=seen + 21), channel, recovered=True,
                                 seq=seen + 21)
            for bad in ("3", -1, True, 1.5, [1], {"seq": 1}):
                assert error_code(await late.subscribe(channel, since=bad)) == "invalid_since", bad
            # since 0 on a channel whose whole history is retained: everything, in order.
            assert is_subscribed(await late.subscribe(channel, since=0), channel, recovered=True, seq=seen + 21)
            everything = await late.wait_live(channel, seen + 21)
            assert seqs(everything) == list(range(1, seen + 22))
            await late.pong()

            # Unsubscribed: nothing more arrives; back with `since`, the missed one is replayed.
            assert await late.request({"op": "unsubscribe", "channel": channel}) == {"type": "unsubscribed",
                                                                                     "channel": channel}
            await restock(api, admin, pid)
            await settled_seq(api, path, seen + 22)
            await ws.wait_live(channel, 22)  # the still-subscribed client has it
            assert len(late.live(channel)) == seen + 21
            assert is_subscribed(await late.subscribe(channel, since=seen + 21), channel, recovered=True,
                                 seq=seen + 22)
            assert seqs((await late.wait_live(channel, seen + 22))[seen + 21:]) == [seen + 22]
        finally:
            late.close()
    finally:
        ws.close()


async def test_since_further_back_than_history_is_not_recovered(hub_env):
    async with hub_with(hub_env, HUB_WS_HISTORY_SIZE="5") as (server, api):
        admin = await api.admin_token()
        product = await fresh_product(api, admin)
        pid, channel = product["id"], f"product:{product['id']}"
        for _ in range(8):
            await restock(api, admin, pid)
        await settled_seq(api, f"/api/v1/products/{pid}", 9)

        clients = [await Ws.open(server.port) for _ in range(3)]
        too_far, edge, beyond = clients
        try:
            assert is_subscribed(await too_far.subscribe(channel, since=1), channel, recovered=False, seq=9)
            assert is_subscribed(await beyond.subscribe(channel, since=3), channel, recovered=False, seq=9)
            assert is_subscribed(await edge.subscribe(channel, since=4), channel, recovered=True, seq=9)
            assert seqs(await edge.wait_live(channel, 5)) == [5, 6, 7, 8, 9]
            await quietly(0.5, lambda: too_far.live() == [] and beyond.live() == [])

            await restock(api, admin, pid)  # not recovered still means subscribed: live from here
            await eventually(lambda: all(seqs(ws.live(channel))[-1:] == [10] for ws in clients), 15,
                             what="seq 10 on every client")
            assert seqs(too_far.live(channel)) == [10] and seqs(edge.live(channel)) == [5, 6, 7, 8, 9, 10]
        finally:
            for ws in clients:
                ws.close()


# 4. X-Channel-Seq --------------------------------------------------------------------------

async def test_x_channel_seq_is_the_current_seq_and_since_it_loses_nothing(api, hub_server):
    admin = await api.admin_token()
    product = await fresh_product(api, admin, stock=10)
    pid, channel = product["id"], f"product:{product['id']}"
    by_id, by_slug = f"/api/v1/products/{pid}", f"/api/v1/products/{product['slug']}"
    assert await channel_seq(api, by_slug) == 1
    for _ in range(3):
        await restock(api, admin, pid)
    await settled_seq(api, by_id, 4)
    assert await channel_seq(api, by_slug) == 4
    probe = await Ws.open(hub_server.port)
    try:
        assert is_subscribed(await probe.subscribe(channel), channel, seq=4)
    finally:
        probe.close()

    # Read the seq, then changes happen while (and after) the client subscribes with it.
    seen = await channel_seq(api, by_slug)
    ws = await Ws.open(hub_server.port)
    try:
        changes = asyncio.ensure_future(asyncio.gather(*(restock(api, admin, pid) for _ in range(3))))
        answer = await ws.subscribe(channel, since=seen)
        assert is_subscribed(answer, channel, recovered=True) and answer["seq"] >= seen, answer
        await changes
        for _ in range(2):
            await restock(api, admin, pid)
        frames = await ws.wait_live(channel, 5)
        await quietly(0.5, lambda: len(ws.live(channel)) == 5)
        assert seqs(frames) == list(range(seen + 1, seen + 6))
        assert sorted(f["event"]["data"]["available"] for f in frames) == list(range(14, 19))
    finally:
        ws.close()

    # An order: the owner's and the admin's reads carry its channel's seq.
    ann = await api.register()
    order = await placed(api, ann["access_token"], pid)
    opath = f"/api/v1/orders/{order['id']}"
    await settled_seq(api, opath, 1, ann["access_token"])
    await transition(api, admin, order["id"], "confirmed")
    await settled_seq(api, opath, 2, ann["access_token"])
    assert await channel_seq(api, opath, admin) == 2
    bob = await api.register()
    r = await api.call("GET", opath, token=bob["access_token"])
    assert r.status == 404 and "X-Channel-Seq" not in r.headers, r
    ws = await Ws.open(hub_server.port, ann["access_token"])
    try:
        assert is_subscribed(await ws.subscribe(f"order:{order['id']}", since=2), f"order:{order['id']}",
                             recovered=True, seq=2)
        await transition(api, admin, order["id"], "processing")
        [frame] = await ws.wait_live(f"order:{order['id']}", 1)
        assert frame["seq"] == 3 and frame["event"]["type"] == "order.processing"
    finally:
        ws.close()


# 5. Garbage --------------------------------------------------------------------------------

async def test_garbage_and_abuse_get_errors_while_other_clients_carry_on(api, hub_server):
    admin = await api.admin_token()
    product, other = await fresh_product(api, admin), await fresh_product(api, admin)
    pid, qid = product["id"], other["id"]
    ann = await api.register()
    port = hub_server.port
    bystander = await Ws.open(port)
    abuser = await Ws.open(port, ann["access_token"])
    events_seen = 0

    async def bystander_fine():
        nonlocal events_seen
        events_seen += 1
        await restock(api, admin, pid)
        frames = await bystander.wait_live(f"product:{pid}", events_seen)
        assert rising_from(frames, 1)
        await bystander.pong()

    try:
        assert is_subscribed(await bystander.subscribe(f"product:{pid}"), f"product:{pid}")
        assert is_subscribed(await abuser.subscribe(f"product:{pid}"), f"product:{pid}")
        garbage = [
            ("{not json", "malformed_json"), ("", "malformed_json"), ('{"op": "ping"', "malformed_json"),
            ("[1, 2]", "invalid_frame"), ('"ping"', "invalid_frame"), ("null", "invalid_frame"),
            ("42", "invalid_frame"),
            ("{}", "invalid_frame"), ('{"op": 5}', "invalid_frame"), ('{"op": null}', "invalid_frame"),
            ('{"op": "dance"}', "unknown_op"), ('{"op": "PING"}', "unknown_op"), ('{"op": ""}', "unknown_op"),
            (b"\x00\x01", "binary_not_supported"), (b'{"op": "ping"}', "binary_not_supported"),
            ('{"op": "unsubscribe", "channel": 5}', "invalid_channel"),
            ('{"op": "subscribe", "channel": "admin:orders"}', "forbidden"),
            (json.dumps({"op": "subscribe", "channel": f"product:{pid}", "since": "x"}), "invalid_since"),
        ]
        for frame, code in garbage:
            answer = await abuser.request(frame)
            assert error_code(answer) == code, (frame, answer)
        await abuser.pong()
        await bystander_fine()
        assert rising_from(await abuser.wait_live(f"product:{pid}", 1), 1)  # its subscription survived

        # 100 subscriptions at most: the 101st is refused, the first 100 keep working.
        names = [f"product:{pid}"] + [f"product:nothing-{n}" for n in range(98)] + [f"product:{qid}"]
        for name in names[1:]:
            await abuser.send({"op": "subscribe", "channel": name})
        await abuser.send({"op": "subscribe", "channel": "product:one-too-many"})
        answers = [await abuser.reply() for _ in range(100)]
        assert all(is_subscribed(a, n) for a, n in zip(answers, names[1:])), answers[:3]
        assert error_code(answers[-1]) == "too_many_subscriptions", answers[-1]
        assert error_code(await abuser.subscribe("user")) == "too_many_subscriptions"
        await abuser.pong()
        await bystander_fine()
        await restock(api, admin, qid)
        await abuser.wait_live(f"product:{pid}", 2)
        [q_event] = await abuser.wait_live(f"product:{qid}", 1)
        assert q_event["seq"] == 2 and q_event["event"]["data"]["product_id"] == qid
        # Leaving one makes room for another.
        assert await abuser.request({"op": "unsubscribe", "channel": names[5]}) == {"type": "unsubscribed",
                                                                                     "channel": names[5]}
        assert is_subscribed(await abuser.subscribe("user"), "user")

        # A frame over 64 KiB closes that socket only.
        await abuser.send({"op": "ping", "pad": "x" * (64 * 1024)})
        await abuser.wait_closed()
        assert abuser.close_code == 1009
        await bystander_fine()
        assert not bystander.closed.is_set()
        assert all(f["channel"] == f"product:{pid}" for f in bystander.live())
    finally:
        bystander.close()
        abuser.close()


# 6. Acks -----------------------------------------------------------------------------------

async def test_ack_marks_the_websocket_delivery_delivered_for_its_owner_only(api, hub_server):
    ann, bob = await customer(api), await customer(api)
    ann_ws = await Ws.open(hub_server.port, ann.token)
    bob_ws = await Ws.open(hub_server.port, bob.token)
    anonymous = await Ws.open(hub_server.port)
    try:
        assert is_subscribed(await anonymous.subscribe("product:any"), "product:any")  # stays open past 5 s
        assert is_subscribed(await ann_ws.subscribe("user"), "user")
        r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "Hello",
                                             "body": "A word from the shop", "channels": ["websocket"]})
        assert r.status == 202, r
        nid = r.data["id"]
        [frame] = await ann_ws.wait_live("user", 1)
        assert frame["type"] == "notification" and frame["notification"]["id"] == nid
        assert frame["notification"]["title"] == "Hello"
        item = await inbox_item(api, ann.token, nid, settled=("sent",))
        assert deliveries(item)["websocket"]["status"] == "sent"

        # Not Bob's, not anyone's, not a string, not anonymous: refused, nothing changes.
        for ws, bad, code in ((bob_ws, nid, "not_found"), (ann_ws, uuid.uuid4().hex, "not_found"),
                              (ann_ws, 5, "not_found"), (ann_ws, None, "not_found"), (anonymous, nid, "forbidden")):
            assert error_code(await ws.request({"op": "ack", "id": bad})) == code, (bad, code)
        await asyncio.sleep(0.5)
        item = await inbox_item(api, ann.token, nid)
        assert deliveries(item)["websocket"]["status"] == "sent", item["deliveries"]

        # Ann's ack: acked, and the delivery moves to delivered.
        before = len(ann_ws.frames)
        assert await ann_ws.request({"op": "ack", "id": nid}) == {"type": "acked", "id": nid}
        await inbox_item(api, ann.token, nid, settled=("delivered",))
        # Again: still hers, acked again (frames are handled in order: the ack's answer comes first).
        await ann_ws.send({"op": "ack", "id": nid})
        await ann_ws.send({"op": "ping"})
        assert [await ann_ws.reply(), await ann_ws.reply()] == [{"type": "acked", "id": nid}, {"type": "pong"}]
        assert ann_ws.frames[before:] == [{"type": "acked", "id": nid}] * 2 + [{"type": "pong"}], ann_ws.frames[before:]

        # Acked the moment it arrives (maybe before the hub has recorded it sent): delivered, and it stays so.
        r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "Again",
                                             "body": "Another word", "channels": ["websocket"]})
        assert r.status == 202, r
        again = r.data["id"]
        await eventually(lambda: [f for f in ann_ws.live("user") if f["notification"]["id"] == again], 15,
                         interval=0.005, what="the second notification")
        assert await ann_ws.request({"op": "ack", "id": again}) == {"type": "acked", "id": again}
        await inbox_item(api, ann.token, again, settled=("delivered",))
        await asyncio.sleep(1.0)
        item = await inbox_item(api, ann.token, again)
        assert deliveries(item)["websocket"]["status"] == "delivered", item["deliveries"]
        assert [f for f in ann_ws.frames[before:] if f.get("type") == "error"] == []
        assert (await api.call("GET", "/api/v1/users/me/notifications", token=bob.token)).data["items"] == []
    finally:
        for ws in (ann_ws, bob_ws, anonymous):
            ws.close()


# 7. Token expiry ---------------------------------------------------------------------------

def token_exp(token: str) -> int:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


async def test_a_socket_closes_when_its_token_expires_unless_a_fresh_token_extends_it(hub_env):
    async with hub_with(hub_env, HUB_ACCESS_TOKEN_TTL_S="3") as (server, api):
        session = await api.register(password="correct-horse")
        token, email = session["access_token"], session["user"]["email"]
        expires = token_exp(token)
        plain = await Ws.open(server.port, token)
        extended = await Ws.open(server.port, token)
        await plain.pong()
        assert is_subscribed(await extended.subscribe("user"), "user")

        # Refresh in a later second than the first token's (so a later `exp`), before it expires.
        await asyncio.sleep(max(0.0, expires - 1.9 - time.time()))
        r = await api.call("POST", "/api/v1/auth/login", {"email": email, "password": "correct-horse"})
        assert r.status == 200, r
        fresh = r.data["access_token"]
        assert token_exp(fresh) > expires
        assert time.time() < expires, "too slow to refresh before expiry"
        assert await extended.request({"op": "auth", "token": fresh}) == {"type": "authenticated",
                                                                          "user_id": session["user"]["id"]}

        await plain.wait_closed(timeout=10)
        assert (plain.close_code, plain.close_reason) == (4401, "token_expired")
        assert expires - 0.5 <= time.time() < expires + 3  # at expiry (generous for a busy machine)
        # The other socket's expiry moved to the fresh token's, a second or more later.
        assert not extended.closed.is_set()
        await extended.pong()  # past the first token's expiry, still open

        await extended.wait_closed(timeout=10)
        assert (extended.close_code, extended.close_reason) == (4401, "token_expired")
        assert token_exp(fresh) - 0.5 <= time.time() < token_exp(fresh) + 3


# 8. Connection limits ----------------------------------------------------------------------

async def test_connections_per_user_and_per_address_are_limited(hub_env):
    limits = {"HUB_WS_MAX_CONNECTIONS_PER_USER": "2", "HUB_WS_MAX_CONNECTIONS_PER_IP": "3"}
    async with hub_with(hub_env, **limits) as (server, api):
        port = server.port
        ann = await api.register()
        token = ann["access_token"]
        first, second = await Ws.open(port, token), await Ws.open(port, token)
        await first.pong()
        await second.pong()
        third = await Ws.open(port, token)
        await third.wait_closed()
        assert (third.close_code, third.close_reason) == (4429, "too_many_connections")
        # Through an auth frame too.
        late = await open_when_allowed(port)
        await late.send({"op": "auth", "token": token})
        await late.wait_closed()
        assert late.close_code == 4429
        await first.pong()
        await second.pong()

        # Per address: three open sockets (the refused ones are gone), the 4th upgrade gets 429.
        anonymous = await open_when_allowed(port)
        assert is_subscribed(await anonymous.subscribe("product:any"), "product:any")  # stays open past 5 s
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(f"ws://127.0.0.1:{port}/ws")
        assert refused.value.code == 429

        # Closing one frees a slot (for the address and for the user).
        first.close()
        await first.wait_closed()

        again = await open_when_allowed(port, token)
        await again.pong()
        assert not again.closed.is_set()
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(f"ws://127.0.0.1:{port}/ws")
        assert refused.value.code == 429
        for ws in (second, anonymous, again):
            ws.close()


async def open_when_allowed(port: int, token: str | None = None) -> Ws:
    """A connection, once the hub has counted the closed ones out (it does on their close)."""
    async def attempt():
        try:
            return await Ws.open(port, token)
        except HTTPClientError as exc:
            assert exc.code == 429, exc
            raise AssertionError("refused with 429") from exc
    return await eventually(attempt, 10, interval=0.05, what="a connection")


# The fan-out's Redis subscription dropping or repeating a message -------------------------

async def test_a_repeated_live_frame_is_dropped_and_a_skipped_one_is_filled_from_history(api, hub_server):
    """Pub/sub gives at most once: a message can be lost (a reconnect) or, as seen by a
    subscriber that already replayed it, arrive late. Simulated here in Redis directly."""
    realtime, redis = hub_server.hub.services.realtime, hub_server.hub.redis
    admin = await api.admin_token()
    product = await fresh_product(api, admin)
    pid = product["id"]
    key = f"product:{pid}"
    ws = await Ws.open(hub_server.port)
    try:
        assert is_subscribed(await ws.subscribe(key), key, seq=1)
        await restock(api, admin, pid)
        [live] = await ws.wait_live(key, 1)
        assert live["seq"] == 2

        # The same message again (as a late pub/sub delivery of what was already sent): dropped.
        stale = dict(live, event=dict(live["event"], id="stale-copy"))
        await redis.publish(realtime._pubsub_channel(key), f"2 {json.dumps(stale)}")
        await restock(api, admin, pid)
        frames = await ws.wait_live(key, 2)
        await quietly(0.3, lambda: len(ws.live(key)) == 2)
        assert seqs(frames) == [2, 3] and all(f["event"]["id"] != "stale-copy" for f in frames)

        # A message in history whose pub/sub copy was lost: the next live frame fills the gap.
        lost_seq = await redis.incr(realtime._seq_key(key))
        lost = dict(live, seq=lost_seq, event=dict(live["event"], id="lost-one"))
        await redis.xadd(realtime._stream(key), {"s": lost_seq, "f": json.dumps(lost)})
        await restock(api, admin, pid)
        frames = await ws.wait_live(key, 4)
        await quietly(0.3, lambda: len(ws.live(key)) == 4)
        assert seqs(frames) == [2, 3, 4, 5]
        assert frames[2]["event"]["id"] == "lost-one" and frames[3]["event"]["type"] == "inventory.changed"

        # Lost from history as well: the client is told it could not recover, then goes on live.
        await redis.incr(realtime._seq_key(key))  # seq 6, never published nor kept
        await restock(api, admin, pid)  # seq 7
        notice = await ws.reply()
        assert is_subscribed(notice, key, recovered=False, seq=7), notice
        await restock(api, admin, pid)  # seq 8
        frames = await ws.wait_live(key, 5)
        assert seqs(frames) == [2, 3, 4, 5, 8]
        await ws.pong()
    finally:
        ws.close()


# 7. Frame ids (CONTRACT §5) -------------------------------------------------------------------

async def test_replies_echo_the_frame_id_and_channel_errors_name_the_channel(api, hub_server):
    admin = await api.admin_token()
    pid = (await fresh_product(api, admin))["id"]
    ann = await api.register()
    ws = await Ws.open(hub_server.port)
    try:
        assert await ws.request({"op": "ping", "id": "p-1"}) == {"type": "pong", "id": "p-1"}
        assert await ws.request({"op": "ping", "id": 7}) == {"type": "pong", "id": 7}
        # Ids a client cannot hold, or that are ours to bound, are not echoed.
        for odd in ({"a": 1}, [1], True, "x" * 65, 2 ** 60, None):
            assert await ws.request({"op": "ping", "id": odd}) == {"type": "pong"}, odd
        # Several subscriptions in flight: each answer carries its frame's id; the refused
        # ones name their channel.
        frames = [{"op": "subscribe", "channel": f"product:{pid}", "id": "a"},
                  {"op": "subscribe", "channel": "admin:orders", "id": "b"},
                  {"op": "subscribe", "channel": "order:not-yours", "id": "c"},
                  {"op": "subscribe", "channel": f"product:{pid}", "since": -1, "id": "d"}]
        for frame in frames:
            await ws.send(frame)
        answers = [await ws.reply() for _ in frames]
        assert is_subscribed(answers[0], f"product:{pid}") and answers[0]["id"] == "a", answers[0]
        for answer, frame, code in zip(answers[1:], frames[1:], ("forbidden", "forbidden", "invalid_since")):
            assert (answer["type"], answer["code"], answer["id"], answer["channel"]) == (
                "error", code, frame["id"], frame["channel"]), answer
        assert await ws.request({"op": "unsubscribe", "channel": f"product:{pid}", "id": "e"}) == {
            "type": "unsubscribed", "channel": f"product:{pid}", "id": "e"}
        answer = await ws.request({"op": "ack", "id": uuid.uuid4().hex})
        assert answer["code"] == "forbidden" and "channel" not in answer
        assert await ws.request({"op": "auth", "token": ann["access_token"], "id": 9}) == {
            "type": "authenticated", "user_id": ann["user"]["id"], "id": 9}
        answer = await ws.request({"op": "dance", "id": "f"})
        assert (answer["code"], answer["id"]) == ("unknown_op", "f")
    finally:
        ws.close()
