"""Abuse of resources (issue 12): one account holding stock with unpaid orders, huge
quantities and addresses, metric series from made-up methods, bodies trickled in, too
many connections, idle anonymous sockets, and clients hiding behind X-Forwarded-For.
Each limit refuses with a clear answer, changes nothing else, and leaves others served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.simple_httpclient import HTTPStreamClosedError
from tornado.websocket import websocket_connect

from config.settings import load_settings
from hub.wiring.client_ip import client_ip
from hub.wiring.server import HubServer
from tests.conftest import Api
from tests.hostile import HEALTHZ_BUDGET_S, fields, inside_one_rate_window, snapshot, while_probing

pytestmark = pytest.mark.timeout(60)
ORDERS = "/api/v1/orders"


@contextlib.asynccontextmanager
async def hub_with(hub_env, **settings):
    hub_env.update({name: str(value) for name, value in settings.items()})
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        yield server, Api(f"http://127.0.0.1:{server.port}")
    finally:
        await server.stop()


def line(product_id: str, quantity: int = 1) -> dict:
    return {"items": [{"product_id": product_id, "quantity": quantity}]}


async def stock_of(api, product_id: str) -> int:
    return (await api.call("GET", f"/api/v1/products/{product_id}")).data["stock"]


# Orders ---------------------------------------------------------------------------------

async def test_unpaid_orders_per_user_are_capped_with_429_and_nothing_reserved(hub_env):
    async with hub_with(hub_env, HUB_MAX_UNPAID_ORDERS=3) as (server, api):
        admin = await api.admin_token()
        product = await api.product(admin, stock=50)
        hoarder, other = (await api.register())["access_token"], (await api.register())["access_token"]
        # Placed at once: concurrent placements never get past the cap together.
        placed = await asyncio.gather(*(api.call("POST", ORDERS, line(product["id"]), token=hoarder) for _ in range(6)))
        assert sorted(r.status for r in placed) == [201] * 3 + [429] * 3, placed
        refused = [r for r in placed if r.status == 429]
        assert all(r.error_code == "too_many_unpaid_orders" and r.headers.get("Retry-After") for r in refused), refused
        assert await stock_of(api, product["id"]) == 47
        before = await snapshot(server.hub)
        r = await api.call("POST", ORDERS, line(product["id"]), token=hoarder)
        assert r.status == 429 and r.error_code == "too_many_unpaid_orders" and r.data["error"]["details"]["limit"] == 3
        assert await snapshot(server.hub) == before
        # Someone else is not held back; cancelling one frees a place.
        assert (await api.call("POST", ORDERS, line(product["id"]), token=other)).status == 201
        first = next(r.data for r in placed if r.status == 201)
        assert (await api.call("POST", f"{ORDERS}/{first['id']}/cancel", token=hoarder)).status == 200
        assert (await api.call("POST", ORDERS, line(product["id"]), token=hoarder)).status == 201


async def test_quantity_per_line_over_the_setting_is_422_and_the_schema_says_so(hub_env):
    async with hub_with(hub_env, HUB_MAX_LINE_QUANTITY=5) as (server, api):
        admin = await api.admin_token()
        product = await api.product(admin, stock=50)
        token = (await api.register())["access_token"]
        before = await snapshot(server.hub)
        body = {"items": [{"product_id": product["id"], "quantity": 5}, {"product_id": product["id"], "quantity": 6}]}
        r = await api.call("POST", ORDERS, body, token=token)
        assert r.status == 422 and fields(r) == {"items.1.quantity"}, r
        assert await snapshot(server.hub) == before
        schema = (await api.call("GET", "/api/v1/openapi.json")).data["components"]["schemas"]["OrderLine"]
        assert schema["properties"]["quantity"]["maximum"] == 5
        assert (await api.call("POST", ORDERS, line(product["id"], 5), token=token)).status == 201


async def test_default_limits_are_the_contracts(hub_env):
    settings = load_settings(hub_env)
    assert (settings.max_unpaid_orders, settings.max_line_quantity, settings.order_rate_per_user) == (10, 100, 60)


async def test_order_placements_are_rate_limited_per_user(hub_env):
    async with hub_with(hub_env, HUB_ORDER_RATE_PER_USER=3, HUB_MAX_UNPAID_ORDERS=50) as (server, api):
        admin = await api.admin_token()
        product = await api.product(admin, stock=50)
        eager, other = (await api.register())["access_token"], (await api.register())["access_token"]
        await inside_one_rate_window()
        for _ in range(3):
            assert (await api.call("POST", ORDERS, line(product["id"]), token=eager)).status == 201
        before = await snapshot(server.hub)
        r = await api.call("POST", ORDERS, line(product["id"]), token=eager)
        assert r.status == 429 and r.error_code == "rate_limited" and 1 <= int(r.headers["Retry-After"]) <= 61, r
        assert await snapshot(server.hub) == before
        assert (await api.call("POST", ORDERS, line(product["id"]), token=other)).status == 201


async def test_shipping_address_is_typed_and_bounded(api, hub_server):
    admin = await api.admin_token()
    product = await api.product(admin, stock=5)
    token = (await api.register())["access_token"]
    before = await snapshot(hub_server.hub)
    bad = [{"city": "x" * 10_000}, {"country": "France"}, "y" * 1001, [1, 2], {"line1": {"nested": "object"}}, 5]
    for address in bad:
        r = await api.call("POST", ORDERS, {**line(product["id"]), "shipping_address": address}, token=token)
        assert r.status == 422 and all(f.startswith("shipping_address") for f in fields(r)), (str(address)[:20], r)
    assert await snapshot(hub_server.hub) == before
    sent = {"name": "Ann", "line1": "1 Quay Street", "city": "Galway", "country": "IE", "extra": "x" * 5000}
    r = await api.call("POST", ORDERS, {**line(product["id"]), "shipping_address": sent}, token=token)
    assert r.status == 201 and r.data["shipping_address"] == {k: v for k, v in sent.items() if k != "extra"}, r
    stored = await hub_server.hub.db["orders"].find_one({"_id": r.data["id"]})
    assert stored["shipping_address"] == r.data["shipping_address"]  # unknown fields are not stored


# Client IP behind proxies -------------------------------------------------------------

class _Request:
    def __init__(self, remote_ip, forwarded=None):
        from tornado.httputil import HTTPHeaders
        self.remote_ip = remote_ip
        self.headers = HTTPHeaders()
        for value in forwarded or ():
            self.headers.add("X-Forwarded-For", value)


class _Settings:
    def __init__(self, trusted):
        self.trusted_proxies = trusted


@pytest.mark.parametrize("trusted, remote, forwarded, expected", [
    (None, "203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # nobody trusted: the header is ignored
    ("10.0.0.0/8", "203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # not from a trusted proxy
    ("10.0.0.0/8", "10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
    ("10.0.0.0/8", "10.1.2.3", ["1.2.3.4, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # made-up left part ignored
    ("10.0.0.0/8", "10.1.2.3", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),  # several headers
    ("10.0.0.0/8", "10.1.2.3", ["not-an-ip"], "10.1.2.3"),
    ("10.0.0.0/8", "10.1.2.3", [], "10.1.2.3"),
    ("10.0.0.0/8", "10.1.2.3", ["10.4.4.4"], "10.1.2.3"),  # only proxies: the nearest is all we know
    ("::1,fd00::/8", "::1", ["2001:db8::7"], "2001:db8::7"),
    ("127.0.0.1", "::ffff:127.0.0.1", ["198.51.100.2"], "198.51.100.2"),  # IPv4-mapped peer
])
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(trusted, remote, forwarded, expected):
    from config.settings import Settings
    checked = Settings.model_validate({"HUB_TRUSTED_PROXIES": trusted} if trusted else {}).trusted_proxies
    assert client_ip(_Request(remote, forwarded), _Settings(checked)) == expected


def test_trusted_proxies_setting_is_checked():
    from config.settings import SettingsError
    with pytest.raises(SettingsError, match="HUB_TRUSTED_PROXIES"):
        load_settings({"HUB_TRUSTED_PROXIES": "10.0.0.0/8,not-a-network"})


async def test_rate_limits_count_the_forwarded_client_only_behind_a_trusted_proxy(hub_env):
    body = {"email": "nobody@example.com", "password": "wrong-password"}

    async def login(api, client):
        return await api.call("POST", "/api/v1/auth/login", body, headers={"X-Forwarded-For": client})

    async with hub_with(hub_env, HUB_AUTH_RATE_PER_IP=2) as (_, api):
        # Untrusted: a new made-up address per request buys nothing.
        await inside_one_rate_window()
        statuses = [(await login(api, f"198.51.100.{n}")).status for n in range(3)]
        assert statuses == [401, 401, 429], statuses
    async with hub_with(hub_env, HUB_AUTH_RATE_PER_IP=2, HUB_TRUSTED_PROXIES="127.0.0.1") as (_, api):
        await inside_one_rate_window()
        statuses = [(await login(api, "198.51.100.7")).status for _ in range(3)]
        assert statuses == [401, 401, 429], statuses
        assert (await login(api, "198.51.100.8")).status == 401  # another client behind the proxy


# Metrics --------------------------------------------------------------------------------

async def test_made_up_methods_and_paths_add_no_metric_series(api):
    for n in range(20):
        r = await api.call(f"BREW{n}", f"/api/v1/made-up-{n}")
        assert r.status in (404, 405), r
        r = await api.call(f"BREW{n}", "/api/v1/auth/login")
        assert r.status == 405, r
    text = (await api.call("GET", "/metrics")).data
    assert "BREW" not in text and "made-up" not in text
    assert 'method="OTHER"' in text


# Connections ----------------------------------------------------------------------------

def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_server(sock: socket.socket, wait_s: float = 2.0) -> bool:
    sock.settimeout(wait_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


async def test_a_slowly_trickled_body_is_cut_off(hub_env):
    async with hub_with(hub_env, HUB_BODY_TIMEOUT_S=1) as (server, api):
        before = await snapshot(server.hub)
        sock = _connect(server.port, "127.0.0.1")
        sock.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200\r\n\r\n{")
        sock.setblocking(False)

        async def trickle():
            started = time.monotonic()
            while time.monotonic() - started < 6:
                try:
                    sock.send(b" ")
                    if sock.recv(1) == b"":
                        return time.monotonic() - started
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    return time.monotonic() - started
                await asyncio.sleep(0.2)
            return None

        cut_after, healthz = await while_probing(api, trickle())
        sock.close()
        assert cut_after is not None and cut_after < 4, cut_after
        assert healthz < HEALTHZ_BUDGET_S
        assert await snapshot(server.hub) == before


async def test_connections_are_capped_per_address_and_in_all(hub_env):
    async with hub_with(hub_env, HUB_MAX_CONNECTIONS_PER_IP=4, HUB_MAX_CONNECTIONS=7) as (server, api):
        hog = [_connect(server.port, "127.0.0.2") for _ in range(4)]
        extra = _connect(server.port, "127.0.0.2")
        await asyncio.sleep(0.2)
        assert _closed_by_server(extra), "a fifth connection from one address was kept"
        assert not any(_closed_by_server(s, 0.05) for s in hog)
        # Another address is served meanwhile...
        client = AsyncHTTPClient()
        r = await client.fetch(HTTPRequest(f"{api.base_url}/healthz", network_interface="127.0.0.3"), raise_error=False)
        assert r.code == 200
        # ...until the hub holds HUB_MAX_CONNECTIONS in all.
        more = [_connect(server.port, "127.0.0.4") for _ in range(3)]
        await asyncio.sleep(0.2)
        with pytest.raises((HTTPStreamClosedError, ConnectionError)):  # closed at once, never answered
            await client.fetch(HTTPRequest(f"{api.base_url}/healthz", network_interface="127.0.0.3", request_timeout=3))
        for sock in hog + more + [extra]:
            sock.close()
        await asyncio.sleep(0.2)
        assert (await api.call("GET", "/healthz")).status == 200
        metrics = (await api.call("GET", "/metrics")).data
        assert 'hub_connections_refused_total{reason="max_connections_per_ip"}' in metrics
        assert 'hub_connections_refused_total{reason="max_connections"}' in metrics


# Anonymous WebSockets -----------------------------------------------------------------

async def _ws(port: int, query: str = ""):
    return await websocket_connect(f"ws://127.0.0.1:{port}/ws{query}")


async def _reply(ws) -> dict:
    message = await ws.read_message()
    assert message is not None, (ws.close_code, ws.close_reason)
    return json.loads(message)


async def test_anonymous_sockets_get_fewer_subscriptions_until_they_sign_in(hub_env):
    async with hub_with(hub_env, HUB_WS_ANONYMOUS_MAX_SUBSCRIPTIONS=3) as (server, api):
        token = (await api.register())["access_token"]
        ws = await _ws(server.port)
        for n in range(3):
            await ws.write_message(json.dumps({"op": "subscribe", "channel": f"product:p{n}"}))
            assert (await _reply(ws))["type"] == "subscribed"
        await ws.write_message(json.dumps({"op": "subscribe", "channel": "product:p3"}))
        assert (await _reply(ws))["code"] == "too_many_subscriptions"
        await ws.write_message(json.dumps({"op": "auth", "token": token}))
        assert (await _reply(ws))["type"] == "authenticated"
        await ws.write_message(json.dumps({"op": "subscribe", "channel": "product:p3"}))
        assert (await _reply(ws))["type"] == "subscribed"
        ws.close()


async def test_idle_anonymous_sockets_are_closed_and_busy_or_signed_in_ones_are_not(hub_env):
    async with hub_with(hub_env, HUB_WS_ANONYMOUS_IDLE_S=1) as (server, api):
        token = (await api.register())["access_token"]
        idle, busy, signed_in = await _ws(server.port), await _ws(server.port), await _ws(server.port, f"?token={token}")
        for ws in (idle, busy, signed_in):
            await ws.write_message(json.dumps({"op": "subscribe", "channel": "product:x"}))
            assert (await _reply(ws))["type"] == "subscribed"
        for _ in range(8):  # 2.4 s: the busy one pings, the others say nothing
            await busy.write_message(json.dumps({"op": "ping"}))
            assert await _reply(busy) == {"type": "pong"}
            await asyncio.sleep(0.3)
        assert await idle.read_message() is None
        assert (idle.close_code, idle.close_reason) == (4408, "idle_timeout")
        for ws in (busy, signed_in):
            await ws.write_message(json.dumps({"op": "ping"}))
            assert await _reply(ws) == {"type": "pong"}
            ws.close()


async def test_upgraded_websockets_leave_the_http_connection_count(hub_env):
    # The gateway caps sockets itself (per user, per address); an HTTP cap must not count them.
    async with hub_with(hub_env, HUB_MAX_CONNECTIONS_PER_IP=3) as (server, api):
        sockets = [await _ws(server.port) for _ in range(6)]
        for ws in sockets:
            await ws.write_message(json.dumps({"op": "ping"}))
            assert await _reply(ws) == {"type": "pong"}
        assert (await api.call("GET", "/healthz")).status == 200
        for ws in sockets:
            ws.close()
