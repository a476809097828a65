"""Order and inventory events on Kafka, end to end (CONTRACT §2 "Orders", §3).

Real HTTP to an in-process hub and real reads from the bundled broker: what the hub
publishes (CloudEvents, keys, inventory figures, low-stock crossings), what survives a
crash around the outbox relay (stable ids, at-least-once), and what the hub does with the
events of other services (applied once, impossible ones dead-lettered, its own skipped).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from tornado.httpclient import AsyncHTTPClient

from config.settings import load_settings
from hub.wiring.server import HubServer
from tests.conftest import SERVICE_KEY, SHARED_STORE, Api, kafka_records, settled

pytestmark = [pytest.mark.stores]

ORDER_DATA_FIELDS = {"order_id", "number", "user_id", "status", "total", "currency"}
INVENTORY_DATA_FIELDS = {"product_id", "available", "previous", "low_stock_threshold"}


# Helpers -------------------------------------------------------------------------------

@dataclass
class Record:
    """One Kafka message: its key, raw value and (when it is JSON) the decoded value."""
    key: str | None
    raw: bytes
    value: object
    partition: int
    offset: int


def as_record(m) -> Record:
    try:
        value = json.loads(m.value)
    except ValueError:
        value = None
    return Record(m.key.decode() if m.key is not None else None, m.value, value, m.partition, m.offset)


async def read_records(kafka, topic: str, *, until=None, timeout: float | None = None,
                       linger: float = 0.0) -> list[Record]:
    """Every message on the hub's (prefixed) `topic`, with its key, as `kafka_records` reads them."""
    return await kafka_records(kafka.bootstrap_servers, kafka.topic(topic), until=until, timeout=timeout,
                               linger=linger, decode=as_record)


def events_of(records: list[Record], event_type: str | None = None, **data) -> list[Record]:
    """Records whose CloudEvent has this type and whose `data` has these values."""
    found = []
    for r in records:
        e = r.value
        if not isinstance(e, dict) or not isinstance(e.get("data"), dict):
            continue
        if event_type is not None and e.get("type") != event_type:
            continue
        if all(e["data"].get(k) == v for k, v in data.items()):
            found.append(r)
    return found


def created_for_product(records: list[Record], product_id: str) -> list[Record]:
    return [r for r in events_of(records, "order.created")
            if any(i.get("product_id") == product_id for i in r.value["data"].get("items", []))]


def dead_original(record: Record):
    """The decoded original message of a dead-letter record (None if it was not JSON)."""
    try:
        return json.loads(record.value.get("value") or "")
    except ValueError:
        return None


def dlq_for(records: list[Record], event_id: str) -> list[Record]:
    """Dead-letter records of the event with this id."""
    return [r for r in records if isinstance(dead_original(r), dict) and dead_original(r).get("id") == event_id]


def cloud_event(event_type: str, data: dict, *, source: str = "/fulfilment", event_id: str | None = None,
                subject: str | None = None) -> dict:
    event = {
        "specversion": "1.0",
        "id": event_id or uuid.uuid4().hex,
        "source": source,
        "type": event_type,
        "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }
    if subject is not None:
        event["subject"] = subject
    return event


async def send_raw(kafka, topic: str, value, key: str) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    await kafka.producer.send_and_wait(kafka.topic(topic), raw, key=key.encode())


async def place(api: Api, token: str, items: list[tuple[str, int]], **extra):
    return await api.call("POST", "/api/v1/orders",
                          {"items": [{"product_id": p, "quantity": q} for p, q in items], **extra}, token=token)


async def poll_order(api: Api, token: str, order_id: str, predicate, timeout: float = 10.0) -> dict:
    """GET the order until `predicate(order)` holds; the last order seen otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await api.call("GET", f"/api/v1/orders/{order_id}", token=token)
        assert r.status == 200, r
        if predicate(r.data) or loop.time() >= deadline:
            return r.data
        await asyncio.sleep(0.1)


def assert_envelope(event: dict) -> None:
    assert event["specversion"] == "1.0"
    assert isinstance(event["id"], str) and event["id"]
    assert event["source"] == "/hub"
    assert event["datacontenttype"] == "application/json"
    assert isinstance(event["data"], dict)
    stamp = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 120, event["time"]


class OwnHubs:
    """Hub servers a test starts and stops itself (to stop one mid-test and start another
    on the same store); each is stopped once, whatever happens."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self.running: list[HubServer] = []

    async def start(self, mongo_client=None) -> tuple[HubServer, Api]:
        server = HubServer(load_settings(self.env), mongo_client=mongo_client)
        await server.start()
        self.running.append(server)
        return server, Api(f"http://127.0.0.1:{server.port}")

    async def stop(self, server: HubServer) -> None:
        self.running.remove(server)
        await server.stop()

    async def close(self) -> None:
        last = self.running[-1] if self.running else None
        if "MONGODB_URI" in self.env and last is not None:
            await last.hub.mongo_client.drop_database(self.env["MONGODB_DB"])
        for server in list(self.running):
            await self.stop(server)

    def client_for_restart(self, server: HubServer):
        """The same embedded store; with a real MongoDB a new client on the same database
        (the first hub's client was closed when it stopped)."""
        return None if "MONGODB_URI" in self.env else server.hub.mongo_client


# 1. One order, its events ------------------------------------------------------------

async def test_one_order_publishes_one_order_created_and_an_inventory_change_per_product(api, hub_server):
    kafka = hub_server.hub.kafka
    admin = await api.admin_token()
    session = await api.register()
    user, token = session["user"], session["access_token"]
    specs = [("10.00", 20, 2), ("2.50", 30, 3), ("7.25", 40, 4)]  # price, stock, ordered
    products = [await api.product(admin, price=price, stock=stock) for price, stock, _ in specs]

    r = await place(api, token, [(p["id"], q) for p, (_, _, q) in zip(products, specs)])
    assert r.status == 201, r
    order = r.data
    assert order["total"] == "56.50"  # 2×10.00 + 3×2.50 + 4×7.25

    await settled(hub_server.hub)
    orders = await read_records(kafka, "orders")
    created = events_of(orders, "order.created", order_id=order["id"])
    assert len(created) == 1, [r.value for r in created]
    record = created[0]
    event = record.value
    assert record.key == order["id"]
    assert_envelope(event)
    assert event["type"] == "order.created"
    assert event["subject"] == user["id"]
    assert ORDER_DATA_FIELDS <= event["data"].keys()
    assert event["data"]["order_id"] == order["id"]
    assert event["data"]["number"] == order["number"]
    assert event["data"]["user_id"] == user["id"]
    assert event["data"]["status"] == "pending"
    assert event["data"]["total"] == "56.50"
    assert event["data"]["currency"] == order["currency"]
    # Nothing else was published about this order.
    assert [r.value["type"] for r in events_of(orders, order_id=order["id"])] == ["order.created"]

    product_ids = {p["id"] for p in products}
    inventory = await read_records(kafka, "inventory")
    ours = [r for r in events_of(inventory, "inventory.changed") if r.value["data"]["product_id"] in product_ids]
    by_order = [r for r in ours if r.value["data"].get("reason") == "order"]
    initial = [r for r in ours if r.value["data"].get("reason") != "order"]
    assert len(by_order) == 3, [r.value for r in by_order]
    # The admin's creation of each product published its own first change, from 0.
    assert sorted((r.value["data"]["product_id"], r.value["data"]["previous"], r.value["data"]["available"])
                  for r in initial) == sorted((p["id"], 0, p["stock"]) for p in products)
    for product, (_, stock, quantity) in zip(products, specs):
        [record] = [r for r in by_order if r.value["data"]["product_id"] == product["id"]]
        event = record.value
        assert record.key == product["id"]
        assert_envelope(event)
        assert INVENTORY_DATA_FIELDS <= event["data"].keys()
        assert event["data"]["available"] == stock - quantity
        assert event["data"]["previous"] == event["data"]["available"] + quantity == stock
        assert event["data"]["low_stock_threshold"] == product["low_stock_threshold"] == 10
        assert event["data"]["order_id"] == order["id"]
    assert len({r.value["id"] for r in ours}) == len(ours) == 6
    assert not [r for r in events_of(inventory, "inventory.low") if r.value["data"]["product_id"] in product_ids]


# 2. inventory.low --------------------------------------------------------------------

async def test_inventory_low_fires_once_when_stock_crosses_below_the_threshold(api, hub_server):
    kafka = hub_server.hub.kafka
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    crossing = await api.product(admin, stock=12, low_stock_threshold=10)
    boundary = await api.product(admin, stock=12, low_stock_threshold=10)

    # 12 → 9: crosses. Then 9 → 8: already below, no second low.
    assert (await place(api, token, [(crossing["id"], 3)])).status == 201
    assert (await place(api, token, [(crossing["id"], 1)])).status == 201
    # 12 → 10: not below the threshold yet. 10 → 9: now it crosses.
    assert (await place(api, token, [(boundary["id"], 2)])).status == 201
    assert (await place(api, token, [(boundary["id"], 1)])).status == 201
    # A later change of each product, after which any low event for the ones before has
    # been published (same key, same partition, published in order).
    for product in (crossing, boundary):
        r = await api.call("POST", f"/api/v1/products/{product['id']}/stock", {"delta": 20}, token=admin)
        assert r.status == 200, r

    def restocked(records):
        return len([r for r in events_of(records, "inventory.changed")
                    if r.value["data"]["product_id"] in (crossing["id"], boundary["id"])
                    and r.value["data"]["previous"] in (8, 9) and r.value["data"]["available"] in (28, 29)]) == 2

    await settled(hub_server.hub)
    inventory = await read_records(kafka, "inventory")
    assert restocked(inventory)

    lows = events_of(inventory, "inventory.low", product_id=crossing["id"])
    assert len(lows) == 1, [r.value for r in lows]
    low = lows[0]
    assert low.key == crossing["id"]
    assert_envelope(low.value)
    assert {k: low.value["data"][k] for k in INVENTORY_DATA_FIELDS} == {
        "product_id": crossing["id"], "available": 9, "previous": 12, "low_stock_threshold": 10}
    changed_ids = {r.value["id"] for r in events_of(inventory, "inventory.changed", product_id=crossing["id"])}
    assert low.value["id"] not in changed_ids

    lows = events_of(inventory, "inventory.low", product_id=boundary["id"])
    assert [(r.value["data"]["previous"], r.value["data"]["available"]) for r in lows] == [(10, 9)]
    # The low event comes right after the change that caused it.
    changes = [r for r in inventory if isinstance(r.value, dict) and r.value["data"].get("product_id") == boundary["id"]]
    assert [(r.value["type"], r.value["data"]["available"]) for r in changes] == [
        ("inventory.changed", 12), ("inventory.changed", 10), ("inventory.changed", 9), ("inventory.low", 9),
        ("inventory.changed", 29)]


# 3. Concurrency ----------------------------------------------------------------------

@pytest.mark.timeout(120)
async def test_200_concurrent_orders_for_50_in_stock(api, hub_server):
    kafka = hub_server.hub.kafka
    admin = await api.admin_token()
    sessions = await asyncio.gather(*(api.register() for _ in range(20)))
    tokens = [s["access_token"] for s in sessions]
    product = await api.product(admin, stock=50)

    fast = Api(api.base_url)
    fast.client = AsyncHTTPClient(force_instance=True, max_clients=200)
    try:
        results = await asyncio.gather(*(place(fast, tokens[i % 20], [(product["id"], 1)]) for i in range(200)))
    finally:
        fast.client.close()

    statuses = [r.status for r in results]
    assert statuses.count(201) == 50, sorted(set(statuses))
    assert statuses.count(409) == 150, sorted(set(statuses))
    for r in results:
        if r.status == 409:
            assert r.error_code == "out_of_stock", r
            assert r.data["error"]["details"][0]["product_id"] == product["id"]
            assert r.data["error"]["details"][0]["requested"] == 1
    placed = {r.data["id"] for r in results if r.status == 201}
    assert len(placed) == 50
    current = await api.call("GET", f"/api/v1/products/{product['id']}")
    assert current.status == 200 and current.data["stock"] == 0, current

    await settled(hub_server.hub)
    orders = await read_records(kafka, "orders")
    created = created_for_product(orders, product["id"])
    assert len(created) == 50
    assert {r.value["data"]["order_id"] for r in created} == placed
    assert all(r.key == r.value["data"]["order_id"] for r in created)

    def order_changes(records):
        return events_of(records, "inventory.changed", product_id=product["id"], reason="order")

    inventory = await read_records(kafka, "inventory")
    changes = order_changes(inventory)
    pairs = [(r.value["data"]["previous"], r.value["data"]["available"]) for r in changes]
    assert len(pairs) == 50
    assert set(pairs) == {(n, n - 1) for n in range(1, 51)}
    assert {r.value["data"]["order_id"] for r in changes} == placed
    lows = events_of(inventory, "inventory.low", product_id=product["id"])
    assert [(r.value["data"]["previous"], r.value["data"]["available"]) for r in lows] == [(10, 9)]

    ids = [r.value["id"] for r in orders + inventory if isinstance(r.value, dict)]
    assert len(ids) == len(set(ids)), "duplicate event ids"


# 4 and 5. Crashes around the relay ---------------------------------------------------

async def _order_with_relay_stopped(hubs: OwnHubs):
    server, api = await hubs.start()
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    product = await api.product(admin, stock=5)
    await server.hub.relay.stop()  # publishes what is pending (the product's creation), then stops
    r = await place(api, token, [(product["id"], 2)])
    assert r.status == 201, r
    order_id = r.data["id"]
    stored = await server.hub.db["orders"].find_one({"_id": order_id})
    assert [e["event"]["type"] for e in stored["outbox"]] == ["order.created"]
    return server, product, order_id, stored["outbox"][0]


async def test_an_order_left_unpublished_by_a_dead_process_is_published_at_the_next_start(hub_env):
    hubs = OwnHubs(hub_env)
    try:
        first, product, order_id, entry = await _order_with_relay_stopped(hubs)
        kafka = first.hub.kafka
        before = await read_records(kafka, "orders", until=lambda rs: events_of(rs, order_id=order_id), timeout=1.0)
        assert not events_of(before, order_id=order_id), "published although the relay was stopped"
        await hubs.stop(first)  # its relay is stopped already: nothing more goes out

        second, _ = await hubs.start(hubs.client_for_restart(first))
        kafka = second.hub.kafka
        after = await read_records(kafka, "orders", until=lambda rs: events_of(rs, "order.created", order_id=order_id),
                                   linger=1.0)
        created = events_of(after, "order.created", order_id=order_id)
        assert len(created) == 1
        assert created[0].value["id"] == entry["id"] == entry["event"]["id"]
        assert created[0].key == order_id
        inventory = await read_records(
            kafka, "inventory", until=lambda rs: events_of(rs, "inventory.changed", order_id=order_id))
        [change] = events_of(inventory, "inventory.changed", order_id=order_id)
        assert (change.value["data"]["previous"], change.value["data"]["available"]) == (5, 3)
        assert change.key == product["id"]
        # Published and then removed from the document.
        for _ in range(50):
            doc = await second.hub.db["orders"].find_one({"_id": order_id})
            if not doc["outbox"]:
                break
            await asyncio.sleep(0.1)
        assert doc["outbox"] == []
    finally:
        await hubs.close()


async def test_an_event_published_but_not_removed_before_a_crash_goes_out_again_with_the_same_id(hub_env):
    hubs = OwnHubs(hub_env)
    try:
        first, _, order_id, entry = await _order_with_relay_stopped(hubs)
        kafka = first.hub.kafka
        orders = first.hub.db["orders"]
        assert await first.hub.relay.publish("orders", order_id) == [entry["id"]]
        assert (await orders.find_one({"_id": order_id}))["outbox"] == []
        # The process "died" between the publish and the removal: the entry is still there.
        await orders.update_one({"_id": order_id}, {"$push": {"outbox": entry}})
        once = await read_records(kafka, "orders", until=lambda rs: events_of(rs, "order.created", order_id=order_id),
                                  linger=0.5)
        assert len(events_of(once, "order.created", order_id=order_id)) == 1
        await hubs.stop(first)

        second, _ = await hubs.start(hubs.client_for_restart(first))
        twice = await read_records(second.hub.kafka, "orders",
                                   until=lambda rs: len(events_of(rs, "order.created", order_id=order_id)) >= 2,
                                   linger=1.0)
        created = events_of(twice, "order.created", order_id=order_id)
        assert len(created) == 2
        assert [r.value["id"] for r in created] == [entry["id"], entry["id"]]
        assert created[0].value == created[1].value
    finally:
        await hubs.close()


# 6. Events from other services --------------------------------------------------------

@pytest.mark.timeout(90)
async def test_events_from_other_services_take_effect_once_and_impossible_ones_are_dead_lettered(api, hub_server):
    kafka = hub_server.hub.kafka
    admin = await api.admin_token()
    session = await api.register()
    user, token = session["user"], session["access_token"]
    product = await api.product(admin, stock=50)

    order_id = (await place(api, token, [(product["id"], 1)])).data["id"]
    for status in ("confirmed", "processing"):
        r = await api.call("POST", f"/api/v1/orders/{order_id}/transitions", {"status": status}, token=admin)
        assert r.status == 200 and r.data["status"] == status, r
    # The hub's own order.confirmed / order.processing are on the topic (and the hub reads them too).
    own = await read_records(kafka, "orders", until=lambda rs: events_of(rs, "order.processing", order_id=order_id))
    own_ids = [r.value["id"] for r in events_of(own, order_id=order_id)]
    assert [r.value["type"] for r in events_of(own, order_id=order_id)] == [
        "order.created", "order.confirmed", "order.processing"]

    # An external order.shipped moves it.
    shipped = cloud_event("order.shipped", {"order_id": order_id, "note": "tracking 1Z999"}, subject=user["id"])
    await send_raw(kafka, "orders", shipped, key=order_id)
    order = await poll_order(api, token, order_id, lambda o: o["status"] == "shipped")
    assert order["status"] == "shipped"
    history = order["status_history"]
    assert [h["status"] for h in history] == ["pending", "confirmed", "processing", "shipped"]
    assert history[-1]["note"] == "tracking 1Z999"

    # The hub publishes its own order.shipped, caused by the external one.
    def hub_shipped(records):
        return [r for r in events_of(records, "order.shipped", order_id=order_id) if r.value["source"] == "/hub"]

    records = await read_records(kafka, "orders", until=hub_shipped)
    [mine] = hub_shipped(records)
    assert mine.value["causationid"] == shipped["id"]
    assert mine.value["id"] != shipped["id"]
    assert mine.key == order_id
    assert mine.value["subject"] == user["id"]
    assert mine.value["data"]["status"] == "shipped"
    assert_envelope(mine.value)

    # The same external event again: no second effect. A later message on the same
    # partition (same key) that is dead-lettered shows the consumer got past it.
    await send_raw(kafka, "orders", shipped, key=order_id)
    unknown_id = f"no-such-order-{uuid.uuid4().hex}"
    sentinel = cloud_event("order.shipped", {"order_id": unknown_id})
    await send_raw(kafka, "orders", sentinel, key=order_id)
    dlq = await read_records(kafka, "dlq", until=lambda rs: dlq_for(rs, sentinel["id"]), timeout=15)
    [unknown] = dlq_for(dlq, sentinel["id"])
    assert unknown_id in unknown.value["reason"] and "unknown order" in unknown.value["reason"]
    assert unknown.key == order_id
    assert not dlq_for(dlq, shipped["id"]), "the duplicate external event was not simply skipped"
    order = await poll_order(api, token, order_id, lambda o: True)
    assert len(order["status_history"]) == 4
    await settled(hub_server.hub)
    records = await read_records(kafka, "orders")
    assert len(hub_shipped(records)) == 1
    # The hub's own events were not applied again (nor dead-lettered as impossible moves).
    assert [h["status"] for h in order["status_history"]].count("confirmed") == 1
    assert [h["status"] for h in order["status_history"]].count("processing") == 1
    for event_id in own_ids + [mine.value["id"]]:
        assert not dlq_for(dlq, event_id), "the hub applied one of its own events"

    # An impossible move (delivered while pending), sent through POST /api/v1/events.
    pending_id = (await place(api, token, [(product["id"], 1)])).data["id"]
    delivered = cloud_event("order.delivered", {"order_id": pending_id}, subject=user["id"])
    r = await api.call("POST", "/api/v1/events", delivered, headers={"X-API-Key": SERVICE_KEY})
    assert r.status == 202, r
    # Malformed messages on the same partition, then a valid event after them.
    await send_raw(kafka, "orders", b"not json", key=pending_id)
    no_id = cloud_event("order.cancelled", {"order_id": pending_id, "note": f"missing id {uuid.uuid4().hex}"})
    del no_id["id"]
    await send_raw(kafka, "orders", no_id, key=pending_id)
    confirmed = cloud_event("order.confirmed", {"order_id": pending_id}, source="/payments")
    await send_raw(kafka, "orders", confirmed, key=pending_id)

    # Every consumer group of the topic dead-letters what it cannot read (the notification
    # engine's hub-notify too), each record naming its group: look at hub-orders'.
    def orders_only(records):
        return [r for r in records if r.value.get("group") == "hub-orders"]

    def all_dead(records):
        records = orders_only(records)
        return (dlq_for(records, delivered["id"]) and [r for r in records if r.value.get("value") == "not json"]
                and without_id(records))

    def without_id(records):
        return [r for r in records if isinstance(dead_original(r), dict)
                and dead_original(r).get("data", {}).get("note") == no_id["data"]["note"]]

    dlq = await read_records(kafka, "dlq", until=all_dead, timeout=15)
    [impossible] = dlq_for(dlq, delivered["id"])
    assert "pending" in impossible.value["reason"] and "delivered" in impossible.value["reason"], impossible.value
    assert impossible.key == pending_id
    orders_dlq = orders_only(dlq)
    [garbage] = [r for r in orders_dlq if r.value.get("value") == "not json"]
    assert garbage.value["reason"], garbage.value
    assert garbage.key == pending_id
    [missing] = without_id(orders_dlq)
    assert "'id'" in missing.value["reason"], missing.value
    # The consumer kept going: the valid event after them took effect (and the
    # impossible one changed nothing).
    order = await poll_order(api, token, pending_id, lambda o: o["status"] == "confirmed")
    assert [h["status"] for h in order["status_history"]] == ["pending", "confirmed"]
    assert order["status_history"][-1]["note"] == "by /payments"
    assert not dlq_for(dlq, confirmed["id"])


async def test_an_impossible_external_event_leaves_the_order_unchanged(api, hub_server):
    kafka = hub_server.hub.kafka
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    product = await api.product(admin, stock=5)
    order = (await place(api, token, [(product["id"], 1)])).data
    delivered = cloud_event("order.delivered", {"order_id": order["id"]})
    await send_raw(kafka, "orders", delivered, key=order["id"])
    dlq = await read_records(kafka, "dlq", until=lambda rs: dlq_for(rs, delivered["id"]), timeout=15)
    [dead] = dlq_for(dlq, delivered["id"])
    assert "pending" in dead.value["reason"] and "delivered" in dead.value["reason"]
    after = (await api.call("GET", f"/api/v1/orders/{order['id']}", token=token)).data
    assert after["status"] == "pending"
    assert after["status_history"] == order["status_history"]
    assert after["updated_at"] == order["updated_at"]


async def test_a_message_without_a_value_is_dead_lettered_and_the_next_event_still_applies(api, hub_server):
    kafka = hub_server.hub.kafka
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    product = await api.product(admin, stock=5)
    order_id = (await place(api, token, [(product["id"], 1)])).data["id"]
    confirmed = cloud_event("order.confirmed", {"order_id": order_id}, source="/payments")
    # A tombstone (null value) and a valid event right behind it, on one partition.
    tombstone = await kafka.producer.send(kafka.topic("orders"), None, key=order_id.encode())
    valid = await kafka.producer.send(kafka.topic("orders"), json.dumps(confirmed).encode(), key=order_id.encode())
    await asyncio.gather(tombstone, valid)
    order = await poll_order(api, token, order_id, lambda o: o["status"] == "confirmed")
    assert order["status"] == "confirmed", "the event after the tombstone was skipped"
    dlq = await read_records(kafka, "dlq", until=lambda rs: [r for r in rs if r.key == order_id], timeout=5)
    assert [r for r in dlq if r.key == order_id and r.value["value"] is None and r.value["reason"]]


# 7. POST /api/v1/events -------------------------------------------------------------

async def test_events_endpoint_needs_a_service_key_and_a_cloud_event(api, hub_server):
    kafka = hub_server.hub.kafka
    session = await api.register()
    user_id = session["user"]["id"]
    service = {"X-API-Key": SERVICE_KEY}
    event = cloud_event("points.awarded", {"user_id": user_id, "delta": 5, "balance": 5, "reason": "promo"},
                        source="/marketing", subject=user_id)

    r = await api.call("POST", "/api/v1/events", event)
    assert r.status == 401, r
    r = await api.call("POST", "/api/v1/events", event, headers={"X-API-Key": "not-a-key"})
    assert r.status == 401, r
    r = await api.call("POST", "/api/v1/events", event, token=session["access_token"])
    assert r.status == 403, r
    r = await api.call("POST", "/api/v1/events", body=b'{"specversion": "1.0", ', headers=service)
    assert r.status == 400 and r.error_code == "malformed_json", r
    r = await api.call("POST", "/api/v1/events", {"hello": "world"}, headers=service)
    assert r.status == 422 and r.error_code == "invalid_event", r
    r = await api.call("POST", "/api/v1/events", {**event, "data": "not an object"}, headers=service)
    assert r.status == 422 and r.error_code == "invalid_event", r
    foo = cloud_event("foo.bar", {"user_id": user_id}, source="/marketing")
    r = await api.call("POST", "/api/v1/events", foo, headers=service)
    assert r.status == 422 and r.error_code == "unknown_event_type", r

    r = await api.call("POST", "/api/v1/events", event, headers=service)
    assert r.status == 202, r
    assert r.data["id"] == event["id"] and r.data["topic"] == "points"
    def from_marketing(records):
        return [x for x in records if isinstance(x.value, dict) and x.value.get("source") == "/marketing"]

    # 202 means in the outbox: once the hub has settled, the topics hold all these calls will
    # ever have put there. (The hub's own points.awarded, once it has credited the event,
    # comes from /hub.)
    await settled(hub_server.hub)
    [record] = from_marketing(await read_records(kafka, "points"))
    assert record.value == event
    assert record.key == user_id
    # None of the refused ones went anywhere.
    for topic in ("orders", "inventory", "notifications"):
        assert from_marketing(await read_records(kafka, topic)) == []


# 8. Two hub processes, one MongoDB -----------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("mongo_uri", [SHARED_STORE], indirect=True)  # the embedded store is per process
async def test_two_hubs_sharing_one_mongodb_never_oversell(hub_env):
    hubs = OwnHubs(hub_env)
    try:
        _, api_a = await hubs.start()
        _, api_b = await hubs.start()
        admin = await api_a.admin_token()
        product = await api_a.product(admin, stock=30)
        sessions = await asyncio.gather(*(api.register() for api in [api_a, api_b] * 5))
        tokens = [s["access_token"] for s in sessions]
        clients = []
        for api in (api_a, api_b):
            fast = Api(api.base_url)
            fast.client = AsyncHTTPClient(force_instance=True, max_clients=100)
            clients.append(fast)
        try:
            results = await asyncio.gather(*(place(clients[i % 2], tokens[i % 10], [(product["id"], 1)])
                                             for i in range(100)))
        finally:
            for fast in clients:
                fast.client.close()
        statuses = [r.status for r in results]
        assert statuses.count(201) == 30, sorted(set(statuses))
        assert statuses.count(409) == 70
        assert all(r.error_code == "out_of_stock" for r in results if r.status == 409)
        for api in (api_a, api_b):
            current = await api.call("GET", f"/api/v1/products/{product['id']}")
            assert current.data["stock"] == 0, current
    finally:
        await hubs.close()
