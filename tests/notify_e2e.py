"""Shared set-up for the notification end-to-end tests (tests/test_notify_*_e2e.py,
tests/test_inbox_api.py): the provider peers (tests/peers.py, tests/push_service.py)
started per test, a hub configured to use them, and small polling helpers.

Import the fixtures into a test module (`from tests.notify_e2e import hub_env, sink, ...`):
the `hub_env` here extends the one in tests/conftest.py, so `hub_server`, `api` and
`topics` start a hub wired to the peers.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from datetime import datetime, timezone

import pytest
from tornado.websocket import websocket_connect

from tests.conftest import SERVICE_KEY, Api, placed  # noqa: F401  (re-exported)
from tests.peers import SmtpSink, TwilioFake
from tests.push_service import PushService

__all__ = [
    "PUBLIC_URL", "TWILIO_SID", "TWILIO_TOKEN", "TWILIO_FROM", "SERVICE_KEY", "Api", "placed",
    "sink", "twilio", "push", "extra_env", "hub_env",
    "eventually", "quietly", "Customer", "customer", "deliveries", "inbox", "inbox_item", "request_notification",
    "requested_event", "WsClient", "metric_value",
]

PUBLIC_URL = "http://hub.test"  # the hub's port is 0 until it starts: Twilio signs this URL
TWILIO_SID, TWILIO_TOKEN, TWILIO_FROM = "AC" + "1" * 32, "twilio-auth-token-e2e", "+15005550006"


# Peers and the hub ------------------------------------------------------------------------

@pytest.fixture
def sink():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
async def twilio():
    fake = TwilioFake(TWILIO_SID, TWILIO_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def push():
    service = PushService()
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def extra_env():
    """Settings a test adds (override with @pytest.mark.parametrize("extra_env", [...]))."""
    return {}


@pytest.fixture
def hub_env(hub_env, sink, twilio, push, extra_env):
    hub_env.update({
        "SMTP_URL": sink.url,
        "SMTP_FROM": "Shop <shop@example.com>",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM": TWILIO_FROM,
        "TWILIO_API_BASE": twilio.base_url,
        "HUB_PUBLIC_URL": PUBLIC_URL,
        "HUB_NOTIFY_RETRY_BASE_S": "0.2",
        "HUB_PROVIDER_TIMEOUT_S": "1",
        "HUB_PUSH_ALLOWED_HOSTS": "127.0.0.1",  # the local push service
        **extra_env,
    })
    return hub_env


# Polling ----------------------------------------------------------------------------------

async def eventually(probe, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """Calls `probe()` (sync or async) until it returns without AssertionError and with a
    truthy value; returns that value. On timeout raises with the last failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: AssertionError | None = None
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = AssertionError(f"{what}: got {value!r}")
        except AssertionError as exc:
            last = exc
        if loop.time() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s: {last}") from last
        await asyncio.sleep(interval)


async def quietly(seconds: float, probe) -> None:
    """Asserts `probe()` stays true (e.g. "nothing arrived") for `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        assert probe(), "something happened that should not have"
        await asyncio.sleep(0.05)
    assert probe(), "something happened that should not have"


# Users, inbox, requests -------------------------------------------------------------------

class Customer:
    def __init__(self, data: dict) -> None:
        self.user = data["user"]
        self.id = data["user"]["id"]
        self.email = data["user"]["email"]
        self.token = data["access_token"]


async def customer(api: Api, **extra) -> Customer:
    return Customer(await api.register(**extra))


def deliveries(item: dict) -> dict[str, dict]:
    return {d["channel"]: d for d in item["deliveries"]}


async def inbox(api: Api, token: str, query: str = "") -> dict:
    r = await api.call("GET", f"/api/v1/users/me/notifications{query}", token=token)
    assert r.status == 200, r
    return r.data


async def inbox_item(api: Api, token: str, nid: str | None = None, *, type: str | None = None,
                     settled: tuple[str, ...] | None = None, timeout: float = 10.0) -> dict:
    """The inbox item with this id (or type), once it exists and, with `settled`, once
    every delivery's status is one of `settled`."""
    async def probe():
        items = (await inbox(api, token))["items"]
        found = [i for i in items if (nid is None or i["id"] == nid) and (type is None or i["type"] == type)]
        assert found, f"no inbox item {nid or type!r} among {[(i['id'], i['type']) for i in items]}"
        item = found[0]
        if settled:
            assert all(d["status"] in settled for d in item["deliveries"]), item["deliveries"]
        return item
    return await eventually(probe, timeout, what=f"inbox item {nid or type}")


async def request_notification(api: Api, body: dict, headers: dict | None = None):
    return await api.call("POST", "/api/v1/notifications", body,
                          headers={"X-API-Key": SERVICE_KEY, **(headers or {})})


def requested_event(user_id: str, *, event_id: str | None = None, **data) -> dict:
    """A `notification.requested` CloudEvent as a marketing service would publish it."""
    return {
        "specversion": "1.0", "id": event_id or uuid.uuid4().hex, "source": "urn:test:marketing",
        "type": "notification.requested", "time": datetime.now(timezone.utc).isoformat(),
        "subject": user_id, "datacontenttype": "application/json",
        "data": {"user_id": user_id, "type": "marketing_promo", "title": "Spring sale",
                 "body": "Everything 20% off", **data},
    }


class WsClient:
    """A WebSocket client of the hub, collecting every frame it receives."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.frames: list[dict] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, port: int, token: str) -> "WsClient":
        conn = await websocket_connect(f"ws://127.0.0.1:{port}/ws?token={token}")
        return cls(conn)

    async def _read(self) -> None:
        while True:
            message = await self.conn.read_message()
            if message is None:
                return
            self.frames.append(json.loads(message))

    async def send(self, frame: dict) -> None:
        await self.conn.write_message(json.dumps(frame))

    async def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        async def probe():
            found = [f for f in self.frames if predicate(f)]
            assert found, f"no such frame among {self.frames}"
            return found[0]
        return await eventually(probe, timeout, interval=0.02, what="websocket frame")

    def close(self) -> None:
        self.conn.close()
        self._reader.cancel()


async def metric_value(api: Api, name: str, **labels) -> float:
    """The value of one Prometheus sample on /metrics (0 if absent)."""
    r = await api.call("GET", "/metrics")
    assert r.status == 200, r
    text = r.data if isinstance(r.data, str) else str(r.data)
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        raw_labels, _, value = line[len(name) + 1:].rpartition("} ")
        found = dict(part.split("=", 1) for part in raw_labels.split(",") if "=" in part)
        found = {k: v.strip('"') for k, v in found.items()}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0
