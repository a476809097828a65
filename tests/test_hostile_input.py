"""Hostile input (issue 12): numbers and nesting meant to burn CPU or reach a 500 are
refused cheaply with a 4xx naming the field, nothing is stored, and /healthz keeps
answering while the attack runs."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.websocket import websocket_connect

from tests.conftest import SERVICE_KEY
from tests.hostile import HEALTHZ_BUDGET_S, fields, snapshot, while_probing

pytestmark = pytest.mark.timeout(60)

HUGE_INT = "1" * 10_000
# Each of these once cost seconds of CPU or a 500 (a Decimal multiplied before any bound).
HUGE_NUMBERS = ["9e999999", "1e-999999", "-9e999999", HUGE_INT, "0." + "0" * 5000 + "1", "1" * 200 + ".5"]


def raw(body: str) -> dict:
    return {"body": body.encode(), "headers": {"Content-Type": "application/json"}}


async def test_huge_numbers_in_a_query_string_are_422_naming_the_parameter(api, hub_server):
    before = await snapshot(hub_server.hub)

    async def attack():
        return await asyncio.gather(*(api.call("GET", f"/api/v1/products?{name}={value}")
                                      for value in HUGE_NUMBERS for name in ("min_price", "max_price", "page", "limit")))

    responses, healthz = await while_probing(api, attack())
    for r, (value, name) in zip(responses, [(v, n) for v in HUGE_NUMBERS for n in ("min_price", "max_price", "page", "limit")]):
        assert r.status == 422 and r.error_code == "validation_failed", (name, value[:20], r.status, r.data)
        assert fields(r) == {name}, (name, value[:20], r.data)
    assert healthz < HEALTHZ_BUDGET_S, healthz
    assert await snapshot(hub_server.hub) == before


async def test_huge_prices_in_a_body_are_422_naming_the_field_and_create_nothing(api, hub_server):
    admin = await api.admin_token()
    product = await api.product(admin)
    before = await snapshot(hub_server.hub)
    bodies = [f'{{"name": "Huge", "price": {json.dumps(v)}, "stock": 1}}' for v in HUGE_NUMBERS]  # strings
    bodies += [f'{{"name": "Huge", "price": {v}, "stock": 1}}' for v in HUGE_NUMBERS]  # JSON number literals

    async def attack():
        created = [api.call("POST", "/api/v1/products", token=admin, **raw(b)) for b in bodies]
        patched = [api.call("PATCH", f"/api/v1/products/{product['id']}", token=admin, **raw(b)) for b in bodies]
        return await asyncio.gather(*created, *patched)

    responses, healthz = await while_probing(api, attack())
    for r, body in zip(responses, bodies + bodies):
        assert r.status == 422 and fields(r) == {"price"}, (body[:60], r.status, r.data)
    assert healthz < HEALTHZ_BUDGET_S, healthz
    assert await snapshot(hub_server.hub) == before
    assert (await api.call("GET", f"/api/v1/products/{product['id']}")).data["price"] == product["price"]


async def test_a_huge_integer_quantity_is_422_naming_the_line_and_reserves_nothing(api, hub_server):
    admin = await api.admin_token()
    product = await api.product(admin, stock=5)
    token = (await api.register())["access_token"]
    before = await snapshot(hub_server.hub)
    quantities = (HUGE_INT, "-" + HUGE_INT, "1e999999", "1" * 25)

    async def attack():
        return await asyncio.gather(*(api.call("POST", "/api/v1/orders", token=token, **raw(
            f'{{"items": [{{"product_id": "{product["id"]}", "quantity": {quantity}}}]}}')) for quantity in quantities))

    responses, healthz = await while_probing(api, attack())
    for quantity, r in zip(quantities, responses):
        assert r.status == 422 and fields(r) == {"items.0.quantity"}, (quantity[:20], r)
    assert healthz < HEALTHZ_BUDGET_S, healthz
    assert await snapshot(hub_server.hub) == before


async def test_numbers_beyond_64_bits_in_free_form_data_are_422(api, hub_server):
    user = await api.register()
    before = await snapshot(hub_server.hub)
    for number in ("1" * 25, "1e400", "-1e400", HUGE_INT):
        body = json.dumps({"user_id": user["user"]["id"], "type": "hello", "title": "t", "body": "b"})
        body = body[:-1] + f', "data": {{"n": [1, {number}]}}}}'
        r = await api.call("POST", "/api/v1/notifications", headers={"X-API-Key": SERVICE_KEY,
                                                                     "Content-Type": "application/json"},
                           body=body.encode())
        assert r.status == 422 and fields(r) == {"data.n.1"}, (number[:20], r)
    # Many out-of-range numbers under long keys: the answer names a bounded few, not all.
    data = ", ".join(f'"{"k" * 500}{n}": 1e999' for n in range(1000))
    body = json.dumps({"user_id": user["user"]["id"], "type": "hello", "title": "t", "body": "b"})[:-1]
    r = await api.call("POST", "/api/v1/notifications", headers={"X-API-Key": SERVICE_KEY,
                                                                 "Content-Type": "application/json"},
                       body=f'{body}, "data": {{{data}}}}}'.encode())
    assert r.status == 422 and len(r.data["error"]["details"]) == 20, r.status
    assert all(len(d["field"]) <= 100 for d in r.data["error"]["details"])
    assert await snapshot(hub_server.hub) == before


@pytest.mark.parametrize("body", [
    "[" * 100_000,
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    '{"items": [{"product_id": "x", "quantity": 1}], "shipping_address": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
    '{"email": "a@example.com", "password": NaN}',
    '{"email": "a@example.com", "password": Infinity}',
    '{"email": "a@example.com", "password": -Infinity}',
])
async def test_too_deep_or_non_json_bodies_are_400_malformed_json(api, hub_server, body):
    token = (await api.register())["access_token"]
    before = await snapshot(hub_server.hub)

    async def attack():
        return await asyncio.gather(
            api.call("POST", "/api/v1/orders", token=token, **raw(body)),
            api.call("POST", "/api/v1/auth/register", **raw(body)),
            api.call("PUT", "/api/v1/users/me/preferences", token=token, **raw(body)),
            api.call("POST", "/api/v1/events", headers={"X-API-Key": SERVICE_KEY, "Content-Type": "application/json"},
                     body=body.encode()))

    responses, healthz = await while_probing(api, attack())
    for r in responses:
        assert r.status == 400 and r.error_code == "malformed_json", r
    assert healthz < HEALTHZ_BUDGET_S, healthz
    assert await snapshot(hub_server.hub) == before


async def test_a_too_deep_websocket_frame_is_an_error_and_the_socket_goes_on(api):
    ws = await websocket_connect(f"ws://127.0.0.1:{api.base_url.rsplit(':', 1)[1]}/ws")
    for frame in ("[" * 60_000, '{"op": "subscribe", "channel": "product:x", "since": ' + HUGE_INT[:4000] + "}"):
        await ws.write_message(frame)
        reply = json.loads(await ws.read_message())
        assert reply["type"] == "error" and reply["code"] in ("malformed_json", "invalid_frame"), reply
    await ws.write_message(json.dumps({"op": "ping"}))
    assert json.loads(await ws.read_message()) == {"type": "pong"}
    ws.close()


async def test_a_huge_content_length_or_id_is_a_4xx(api, hub_server):
    before = await snapshot(hub_server.hub)
    reader, writer = await asyncio.open_connection("127.0.0.1", hub_server.port)
    writer.write(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Length: " + HUGE_INT[:4000].encode()
                 + b"\r\n\r\n{}")
    answer = await asyncio.wait_for(reader.read(200), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 4"), answer
    for path in (f"/api/v1/products/{'x' * 5000}", f"/api/v1/orders/{'x' * 5000}"):
        r = await api.call("GET", path, token=(await api.register())["access_token"])
        assert r.status == 404, r
    assert (await api.call("GET", "/healthz")).status == 200
    counts = (await snapshot(hub_server.hub))["counts"]
    assert counts["users"] == before["counts"]["users"] + 2 and counts["products"] == before["counts"]["products"]


async def test_lone_surrogates_are_400_not_a_storage_error(api, hub_server):
    before = await snapshot(hub_server.hub)
    body = '{"email": "surrogate@example.com", "password": "correct-horse", "name": "bad \\ud800 name"}'
    r = await api.call("POST", "/api/v1/auth/register", **raw(body))
    assert r.status == 400 and r.error_code == "malformed_json", r
    assert await snapshot(hub_server.hub) == before
    fine = '{"email": "pair@example.com", "password": "correct-horse", "name": "ok \\ud83d\\ude00"}'
    assert (await api.call("POST", "/api/v1/auth/register", **raw(fine))).status == 201


async def test_a_number_is_a_number_whatever_its_spelling(api, hub_server):
    """JSON (and JSON Schema's "integer") has one kind of number: 2.0 and 2e0 are the integer 2,
    as the OpenAPI document promises; 2.5 is not."""
    admin = await api.admin_token()
    product = await api.product(admin, stock=10)
    token = (await api.register())["access_token"]
    body = f'{{"items": [{{"product_id": "{product["id"]}", "quantity": 2.0}}, ' \
           f'{{"product_id": "{product["id"]}", "quantity": 1e0}}]}}'
    r = await api.call("POST", "/api/v1/orders", token=token, **raw(body))
    assert r.status == 201 and sum(line["quantity"] for line in r.data["items"]) == 3, r
    body = f'{{"items": [{{"product_id": "{product["id"]}", "quantity": 2.5}}]}}'
    r = await api.call("POST", "/api/v1/orders", token=token, **raw(body))
    assert r.status == 422 and fields(r) == {"items.0.quantity"}, r
    assert (await api.call("GET", f"/api/v1/products/{product['id']}")).data["stock"] == 7
