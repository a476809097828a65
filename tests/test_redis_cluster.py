"""The hub on Redis Cluster (REDIS_CLUSTER=1): a local cluster of three masters started from
the machine's redis-server (tests/redis_cluster.py), skipped with the reason where there is none.

The keys one script or transaction touches share a slot (hash tags), channels spread over the
masters, a node that lost its scripts is served again, PUBLISH from any master reaches a
subscriber on another, and frequency caps and rate limits count in one place. Then two hubs
sharing the cluster: live delivery over WebSocket across them with rising seq, recovery with
`since` on the other hub, a notification on the user channel, a frequency cap and a rate limit
counted across both. Last, a master with the subscription fails over to its replica and
live delivery resumes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from config.settings import SettingsError, load_settings
from domain.errors import RateLimited
from hub.adapters.frequency_caps import FrequencyCaps
from hub.adapters.ratelimit import RateLimiter
from hub.live.realtime import Realtime
from hub.adapters.redis_client import connect_redis
from hub.wiring.server import HubServer
from tests.conftest import SERVICE_KEY, Api, placed
from tests.notify_e2e import eventually, inbox_item
from tests.redis_cluster import ClusterUnavailable, LocalRedisCluster
from tests.test_realtime_gateway import (Ws, fresh_product, is_subscribed, restock, rising_from, seqs,
                                        settled_seq)

pytestmark = pytest.mark.slow  # starts processes of its own: not in `make test-fast`


@pytest.fixture(scope="module")
def cluster():
    try:
        local = LocalRedisCluster().start()
    except ClusterUnavailable as exc:
        pytest.skip(f"no local Redis Cluster: {exc}")
    yield local
    local.stop()
    assert not local.dir.exists()


def cluster_client(cluster: LocalRedisCluster) -> RedisCluster:
    settings = load_settings({"REDIS_URL": cluster.url, "REDIS_CLUSTER": "1", "HUB_ENV": "test"})
    client = connect_redis(settings)
    assert isinstance(client, RedisCluster)
    return client


def slot(key: str) -> int:
    return key_slot(key.encode())


def payload(text: str) -> tuple[str, str]:
    return '{"seq":', f',"text":{json.dumps(text)}}}'


class Listener:
    def __init__(self) -> None:
        self.got: list[tuple[str, int, dict]] = []

    def deliver(self, key: str, seq: int, frame: bytes) -> None:
        self.got.append((key, seq, json.loads(frame)))


# Settings --------------------------------------------------------------------------------

def test_cluster_mode_needs_a_redis_url_and_a_prefix_without_braces():
    for env, named in (({"REDIS_CLUSTER": "1"}, "REDIS_CLUSTER"),
                       ({"REDIS_CLUSTER": "1", "REDIS_URL": "unix:///tmp/redis.sock"}, "REDIS_CLUSTER"),
                       ({"REDIS_URL": "redis://r:6379", "HUB_REDIS_PREFIX": "hub{x}:"}, "HUB_REDIS_PREFIX")):
        with pytest.raises(SettingsError, match=f"^{named}:"):
            load_settings({"HUB_ENV": "test", **env})
    assert load_settings({"HUB_ENV": "test", "REDIS_URL": "redis://r:6379", "REDIS_CLUSTER": "1"}).redis_cluster
    assert not load_settings({"HUB_ENV": "test"}).redis_cluster


def test_a_cluster_that_cannot_serve_a_slot_is_a_dependency_failure_retried_not_dropped():
    """redis-py's cluster errors are not all RedisErrors; the consumers retry these (the
    realtime fan-out keeps its batch) instead of treating them as the event's fault."""
    from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError

    from hub.adapters.dependency_errors import dependency_failure

    for exc in (SlotNotCoveredError("slot 42 is not covered"), RedisClusterException("no reachable node"),
                ClusterDownError("CLUSTERDOWN")):
        assert dependency_failure(exc), exc


# The building blocks on the cluster ------------------------------------------------------

@pytest.mark.timeout(60)
async def test_realtime_on_the_cluster_seq_dedupe_history_and_delivery_from_every_master(cluster):
    client = cluster_client(cluster)
    prefix = f"rtc-{uuid.uuid4().hex[:8]}:"
    subscriber = Realtime(client, prefix, history_size=5, history_age_s=3600)
    publisher = Realtime(client, prefix, history_size=5, history_age_s=3600)  # as another process would
    await subscriber.start()
    await publisher.start()
    try:
        keys = [f"order:o{n}" for n in range(12)]
        for key in keys:  # each channel's keys in one slot
            assert len({slot(subscriber._seq_key(key)), slot(subscriber._stream(key)),
                        slot(subscriber._dedupe_key(key, "m"))}) == 1
        owners = {client.get_node_from_key(subscriber._seq_key(key)).name for key in keys}
        assert len(owners) == 3, owners  # the channels are spread over all three masters

        listener = Listener()
        for key in keys:
            await subscriber.join(key, listener)
        # One message on all twelve channels: one pipeline over three masters.
        assert await publisher.publish("m1", {key: payload(f"1 {key}") for key in keys}) == {key: 1 for key in keys}
        assert await publisher.publish("m1", {key: payload("again") for key in keys}) == {}  # a redelivery
        assert await publisher.publish("m2", {keys[0]: payload("2"), keys[5]: payload("2")}) == {keys[0]: 2, keys[5]: 2}

        def delivered():
            assert len(listener.got) == 14, listener.got
            return True
        await eventually(delivered, 10, interval=0.02, what="every published frame delivered")
        assert sorted((key, seq) for key, seq, _ in listener.got) == sorted(
            [(key, 1) for key in keys] + [(keys[0], 2), (keys[5], 2)])
        assert all(frame == {"seq": seq, "text": f"1 {key}" if seq == 1 else "2"} for key, seq, frame in listener.got)

        # History, and what it cannot reach (capped at 5 entries).
        for n in range(3, 9):
            await publisher.publish(f"m{n}", {keys[0]: payload(str(n))})
        current, frames = await subscriber.since(keys[0], 4)
        assert current == 8 and [seq for seq, _ in frames] == [5, 6, 7, 8]
        assert await subscriber.since(keys[0], 1) == (8, None)
        assert await subscriber.current_seq(keys[0]) == 8 and await subscriber.current_seq(keys[1]) == 1

        # A master that lost its scripts (restarted, failed over): loaded again, nothing doubled.
        await client.script_flush()  # on every master
        assert await publisher.publish("m9", {key: payload("9") for key in keys[:6]}) == {
            keys[0]: 9, **{key: 2 for key in keys[1:5]}, keys[5]: 3}
        await publisher.publish_events([({"id": "e1", "type": "inventory.changed"}, [keys[1], keys[2]])])
        assert (await subscriber.current_seq(keys[1]), await subscriber.current_seq(keys[2])) == (3, 3)
    finally:
        await subscriber.stop()
        await publisher.stop()
        for key in [k async for k in client.scan_iter(match=f"{prefix}*")]:
            await client.delete(key)
        await client.aclose()


@pytest.mark.timeout(60)
async def test_frequency_caps_and_rate_limits_on_the_cluster(cluster):
    client = cluster_client(cluster)
    prefix = f"caps-{uuid.uuid4().hex[:8]}:"
    try:
        caps = FrequencyCaps(client, prefix)
        now = datetime.now(timezone.utc)
        assert await caps.admit("u1", "n1", now, 2, 10) is None
        assert await caps.admit("u1", "n2", now + timedelta(seconds=1), 2, 10) is None
        assert await caps.admit("u1", "n2", now + timedelta(seconds=2), 2, 10) is None  # counted once
        held = await caps.admit("u1", "n3", now + timedelta(seconds=3), 2, 10)
        assert held is not None and now + timedelta(minutes=59) < held <= now + timedelta(hours=1, seconds=1)
        assert await caps.admit("u2", "n3", now, 2, 10) is None  # another user, counted apart
        # A broadcast batch: many users' admissions in one pipeline, spread over the masters.
        batch = [(f"b{n}", f"m{n}", 1, 10) for n in range(30)] + [("u1", "n4", 2, 10)]
        admitted = await caps.admit_many(batch, now + timedelta(seconds=4))
        assert [admitted[f"m{n}"] for n in range(30)] == [None] * 30
        assert admitted["n4"] is not None  # u1 is over its hourly cap already

        limiter = RateLimiter(client, prefix)
        if time.time() % 60 > 55:  # the window would roll over mid-test
            await asyncio.sleep(60 - time.time() % 60 + 0.1)
        for _ in range(3):
            await limiter.hit("login:1.2.3.4", 3)
        with pytest.raises(RateLimited) as refused:
            await limiter.hit("login:1.2.3.4", 3)
        assert 1 <= refused.value.retry_after <= 61
        await limiter.hit("login:5.6.7.8", 3)
    finally:
        for key in [k async for k in client.scan_iter(match=f"{prefix}*")]:
            await client.delete(key)
        await client.aclose()


# Two hubs sharing the cluster ------------------------------------------------------------

@pytest.fixture
async def two_hubs(hub_env, cluster):
    """Hubs A and B on the cluster, the same Kafka topics and the same (embedded) store."""
    env = dict(hub_env, REDIS_URL=cluster.url, REDIS_CLUSTER="1", HUB_REDIS_PREFIX=f"e2e-{uuid.uuid4().hex[:8]}:",
               HUB_AUTH_RATE_PER_IP="20")
    a = HubServer(load_settings(env))
    await a.start()
    b = HubServer(load_settings(env), mongo_client=a.hub.mongo_client)
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


@pytest.mark.timeout(120)
async def test_two_hubs_on_the_cluster_deliver_live_recover_and_share_caps_and_limits(two_hubs):
    a, b = two_hubs
    assert isinstance(a.hub.redis, RedisCluster)
    api_a, api_b = Api(f"http://127.0.0.1:{a.port}"), Api(f"http://127.0.0.1:{b.port}")
    r = await api_b.call("GET", "/readyz")
    assert r.status == 200 and r.data["redis"] == "up", r.data
    admin = await api_a.admin_token()
    product = await fresh_product(api_a, admin, stock=50)
    pid = product["id"]
    ann = await api_a.register()
    watcher = await Ws.open(b.port, ann["access_token"])
    try:
        answer = await watcher.subscribe(f"product:{pid}")
        assert is_subscribed(answer, f"product:{pid}", seq=1), answer
        assert is_subscribed(await watcher.subscribe("user"), "user", seq=0)

        # Changes made through A reach the client of B, each channel's seq rising by one.
        await restock(api_a, admin, pid, 5)
        order = await placed(api_a, ann["access_token"], pid, quantity=2)
        stock = await watcher.wait_live(f"product:{pid}", 2)
        assert rising_from(stock, 1) and [f["event"]["data"]["available"] for f in stock] == [55, 53]
        created = await eventually(lambda: [f for f in watcher.events("user") if f["event"]["type"] == "order.created"],
                                   15, what="order.created on the user channel")
        assert created[0]["event"]["data"]["order_id"] == order["id"]

        # Away for two changes, back on A with `since`: exactly what was missed, then live.
        watcher.close()
        await restock(api_b, admin, pid, 1)
        await restock(api_a, admin, pid, 1)
        await settled_seq(api_b, f"/api/v1/products/{pid}", 5)
        back = await Ws.open(a.port, ann["access_token"])
        try:
            answer = await back.subscribe(f"product:{pid}", since=3)
            assert is_subscribed(answer, f"product:{pid}", recovered=True, seq=5), answer
            replayed = await back.wait_live(f"product:{pid}", 2)
            assert seqs(replayed) == [4, 5] and [f["event"]["data"]["available"] for f in replayed] == [54, 55]
            await restock(api_b, admin, pid, 1)
            assert seqs(await back.wait_live(f"product:{pid}", 3)) == [4, 5, 6]
        finally:
            back.close()

        # Notifications requested at A and B reach the user channel on A; a cap of 2 an hour
        # counted across both hubs holds the third.
        bob = await api_b.register()
        bob_ws = await Ws.open(a.port, bob["access_token"])
        try:
            assert is_subscribed(await bob_ws.subscribe("user"), "user", seq=0)
            r = await api_b.call("PUT", "/api/v1/users/me/preferences", {"frequency": {"max_per_hour": 2, "max_per_day": 50}},
                                 token=bob["access_token"])
            assert r.status == 200, r
            ids = []
            for n, api in enumerate((api_b, api_a, api_b)):
                r = await api.call("POST", "/api/v1/notifications",
                                   {"user_id": bob["user"]["id"], "type": "marketing", "title": f"News {n}", "body": "Hi",
                                    "channels": ["websocket"]}, headers={"X-API-Key": SERVICE_KEY})
                assert r.status == 202, r
                ids.append(r.data["id"])
                await inbox_item(api_a, bob["access_token"], r.data["id"], settled=("sent", "delivered", "held"))
            await bob_ws.wait_live("user", 2)
            await asyncio.sleep(0.5)
            frames = bob_ws.live("user")
            assert [f["notification"]["id"] for f in frames] == ids[:2] and seqs(frames) == [1, 2]
            third = await inbox_item(api_a, bob["access_token"], ids[2])
            assert [(d["channel"], d["status"], d["reason"]) for d in third["deliveries"]] == [
                ("websocket", "held", "frequency_cap")]
        finally:
            bob_ws.close()

        # Sign-ins per client address, counted across both hubs (limit 20 a minute).
        if time.time() % 60 > 45:
            await asyncio.sleep(60 - time.time() % 60 + 0.1)
        answers = []
        for n in range(24):
            r = await (api_a, api_b)[n % 2].call("POST", "/api/v1/auth/login", {"email": "nobody@example.com",
                                                                                "password": "wrong-password"})
            answers.append(r.status)
        assert 429 in answers and set(answers[answers.index(429):]) == {429}, answers
        # 20 in all, the admin's sign-in and the two registrations among them unless a new
        # minute began since.
        assert 17 <= answers.index(429) <= 20 and set(answers[:answers.index(429)]) <= {401, 423}, answers
    finally:
        watcher.close()


# A master fails over ----------------------------------------------------------------------

@pytest.mark.timeout(120)
async def test_live_delivery_resumes_after_the_subscribers_master_fails_over():
    """Three masters with a replica each. The master holding a process's subscriber
    connection dies for good; its replica takes over, and the process subscribes again there
    (on its own: nothing else of the process touches that master), so frames published after
    the failover reach its listener, and history fills what was missed meanwhile."""
    try:
        local = LocalRedisCluster(replicas=1).start()
    except ClusterUnavailable as exc:
        pytest.skip(f"no local Redis Cluster: {exc}")
    subscriber_client, publisher_client = cluster_client(local), cluster_client(local)
    prefix = f"rtf-{uuid.uuid4().hex[:8]}:"
    subscriber = Realtime(subscriber_client, prefix, history_size=50, history_age_s=3600)
    publisher = Realtime(publisher_client, prefix, history_size=50, history_age_s=3600)
    try:
        await subscriber.start()
        await publisher.start()
        listener = Listener()
        keys = [f"product:p{n}" for n in range(6)]
        for key in keys:
            await subscriber.join(key, listener)
        await publisher.publish("before", {key: payload("before") for key in keys})
        await eventually(lambda: len(listener.got) == 6, 10, interval=0.02, what="frames before the failover")

        dead = subscriber.pubsub.get_pubsub_node().port
        # Redis replicates asynchronously: killed before its replica has the frames' seqs, the
        # master would take them along (the seq would start over), whatever the hub does.
        await eventually(lambda: local.replicated(dead), 10, interval=0.1, what="the master's writes on its replica")
        local.kill(dead)
        alive = [port for port in local.ports if port != dead]
        await eventually(lambda: all(local.state_ok(port) for port in alive), 30, interval=0.2,
                         what="the cluster healthy again after the failover")

        # Publishing goes on (the publisher's client finds the new master); frames published
        # while the subscriber was away are missed live, those after it subscribed again arrive.
        sent = []

        async def delivered_after() -> bool:
            try:
                await publisher.publish(f"after-{len(sent)}", {key: payload(f"after-{len(sent)}") for key in keys})
                sent.append(True)
            except Exception:  # the publisher's client still learning the new map
                return False
            await asyncio.sleep(0.1)
            return any(frame["text"].startswith("after") for _, _, frame in listener.got)
        await eventually(delivered_after, 30, interval=0.2, what="a frame published after the failover delivered")
        assert subscriber.pubsub.get_pubsub_node().port != dead

        got_before = len(listener.got)
        await publisher.publish("last", {key: payload("last") for key in keys})
        await eventually(lambda: len(listener.got) == got_before + 6, 10, interval=0.02, what="the last frames")
        for key in keys:
            [(seq, frame)] = [(seq, frame) for k, seq, frame in listener.got[got_before:] if k == key]
            assert frame["text"] == "last" and seq == await subscriber.current_seq(key) == len(sent) + 2
            # What a session fills from when the next live frame shows a gap: nothing lost.
            _, replay = await subscriber.since(key, 1)
            assert [s for s, _ in replay] == list(range(2, seq + 1))
    finally:
        for rt in (subscriber, publisher):
            if rt._task is not None:
                await rt.stop()
        await subscriber_client.aclose()
        await publisher_client.aclose()
        local.stop()
    assert not local.dir.exists()
