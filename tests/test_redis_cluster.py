"""The hub on Redis Cluster (REDIS_CLUSTER=1): a local cluster of three masters started from
the machine's redis-server (tests/redis_cluster.py). Every script and transaction the hub
runs touches keys of one hash tag, so each lands on one node; a key set spread over nodes
would fail with CROSSSLOT. Realtime fan-out with history recovery, frequency caps and rate
limits run on it here, through a hub started in-process."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest

from config.settings import SettingsError, load_settings
from domain.errors import RateLimited
from hub.frequency_caps import FrequencyCaps
from hub.ratelimit import RateLimiter
from hub.realtime import Realtime
from hub.redis_client import connect_redis
from hub.server import HubServer
from tests.conftest import Api, placed
from tests.redis_cluster import LocalCluster, Unavailable
from tests.test_realtime_processes import Ws



@pytest.fixture(scope="module")
def cluster_url():
    cluster = LocalCluster()
    try:
        url = cluster.start()
    except Unavailable as exc:
        pytest.skip(f"no local Redis Cluster: {exc}")
    yield url
    cluster.stop()


@pytest.fixture
def cluster_env(hub_env, cluster_url):
    hub_env.update(REDIS_URL=cluster_url, REDIS_CLUSTER="1", HUB_REDIS_PREFIX=f"cl-{uuid.uuid4().hex[:8]}:")
    return hub_env


@pytest.fixture
def client(io_loop, cluster_env):
    redis = connect_redis(load_settings(cluster_env))
    yield redis
    io_loop.run_sync(redis.aclose)


@pytest.mark.gen_test(timeout=60)
async def test_the_nodes_share_the_slots_so_keys_spread_over_them(client):
    assert await client.ping()
    nodes = {(node.host, node.port) for node in client.get_primaries()}
    assert len(nodes) == 3
    # Channels' keys carry their channel as hash tag: different channels, different slots.
    slots = {client.keyslot(f"p:seq:{{product:{n}}}") for n in range(20)}
    assert len(slots) > 10


@pytest.mark.gen_test(timeout=60)
async def test_fan_out_and_recovery_on_the_cluster(cluster_env):
    server = HubServer(load_settings(cluster_env))
    await server.start()
    ws = None
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        admin = await api.admin_token()
        buyer = await api.register()
        products = [await api.product(admin, stock=10) for _ in range(3)]  # channels on several nodes

        ws = await Ws.connect(server, buyer["access_token"])
        for product in products:
            await ws.subscribe(f"product:{product['id']}")
        await ws.subscribe("user")
        orders = [await placed(api, buyer["access_token"], product["id"], quantity=2) for product in products]
        for product in products:
            channel = f"product:{product['id']}"
            await ws.wait_for(lambda f: f.get("channel") == channel and f.get("type") == "event"
                              and f["event"]["type"] == "inventory.changed" and f["event"]["data"]["available"] == 8)
        created = await ws.wait_for(lambda f: f.get("channel") == "user" and f.get("type") == "event"
                                    and f["event"]["type"] == "order.created" and f["event"]["data"]["order_id"] == orders[-1]["id"])
        last_seq = ws.frames[created]["seq"]
        ws.close()

        # Missed while away, recovered from the channel's history (a stream on its node).
        await api.call("POST", f"/api/v1/orders/{orders[0]['id']}/cancel", token=buyer["access_token"])
        await asyncio.sleep(1.0)
        ws = await Ws.connect(server, buyer["access_token"])
        subscribed = await ws.subscribe("user", since=last_seq)
        assert subscribed["recovered"] is True and subscribed["seq"] > last_seq, subscribed
        await ws.wait_for(lambda f: f.get("type") != "subscribed" and f.get("seq") == subscribed["seq"])
        replay = [f for f in ws.frames if f.get("type") in ("event", "notification") and f.get("channel") == "user"]
        assert [f["seq"] for f in replay] == list(range(last_seq + 1, subscribed["seq"] + 1))
        assert any(f["type"] == "event" and f["event"]["type"] == "order.cancelled" for f in replay)
    finally:
        if ws is not None:
            ws.close()
        await server.stop()


@pytest.mark.gen_test(timeout=60)
async def test_a_message_is_published_once_per_channel_on_the_cluster(client, cluster_env):
    realtime = Realtime(client, cluster_env["HUB_REDIS_PREFIX"], history_size=10, history_age_s=60)
    payload = ('{"seq":', "}")
    channels = {f"product:{n}": payload for n in range(6)}
    assert await realtime.publish("m1", channels) == {key: 1 for key in channels}
    assert await realtime.publish("m1", channels) == {}  # a redelivery
    assert await realtime.publish("m2", channels) == {key: 2 for key in channels}
    for key in channels:
        assert await realtime.since(key, 0) == (2, [(1, '{"seq":1}'), (2, '{"seq":2}')])


@pytest.mark.gen_test(timeout=60)
async def test_frequency_caps_hold_under_racing_admissions_on_the_cluster(client, cluster_env):
    caps = FrequencyCaps(client, cluster_env["HUB_REDIS_PREFIX"])
    now = datetime.now(timezone.utc)
    for user in ("ann", "bob", "cy"):  # users' keys on different nodes
        results = await asyncio.gather(*(caps.admit(user, f"{user}-{n}", now, 3, 10) for n in range(10)))
        admitted = [n for n, r in enumerate(results) if r is None]
        assert 1 <= len(admitted) <= 3, results
        assert await caps.admit(user, f"{user}-{admitted[0]}", now, 3, 10) is None  # the same one counts once
        extra = [await caps.admit(user, f"{user}-more-{n}", now, 3, 10) for n in range(3 - len(admitted) + 1)]
        assert extra.count(None) == 3 - len(admitted)
        assert extra[-1] is not None and extra[-1] > now  # the cap is full: held until it fits


@pytest.mark.gen_test(timeout=60)
async def test_rate_limits_on_the_cluster(client, cluster_env):
    limiter = RateLimiter(client, cluster_env["HUB_REDIS_PREFIX"])
    for _ in range(3):
        await limiter.hit("ip:10.0.0.1", 3)
    with pytest.raises(RateLimited):
        await limiter.hit("ip:10.0.0.1", 3)
    await limiter.hit("ip:10.0.0.2", 3)  # another key, its own count


@pytest.mark.gen_test(timeout=60)
async def test_a_hub_on_the_cluster_rate_limits_sign_ins(cluster_env):
    cluster_env["HUB_AUTH_RATE_PER_IP"] = "3"
    server = HubServer(load_settings(cluster_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        body = {"email": "rl@example.com", "password": "whatever-1"}
        statuses = [(await api.call("POST", "/api/v1/auth/login", body)).status for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        health = await api.call("GET", "/readyz")
        assert health.status == 200 and health.data["redis"] == "up"
    finally:
        await server.stop()


@pytest.mark.parametrize("environ, variable", [
    ({"REDIS_CLUSTER": "1"}, "REDIS_CLUSTER"),
    ({"REDIS_URL": "redis://r:6379", "HUB_REDIS_PREFIX": "hub{x}:"}, "HUB_REDIS_PREFIX"),
], ids=["cluster-without-url", "braces-in-prefix"])
def test_cluster_settings_that_cannot_work_are_refused_with_one_line(environ, variable):
    with pytest.raises(SettingsError) as refused:
        load_settings(environ)
    message = str(refused.value)
    assert message.startswith(f"{variable}:") and "\n" not in message, message
