"""The server-side cart over real HTTP and WebSocket (CONTRACT v2 §5): add, change, remove,
clear; prices and stock read live; coupon and points shown as the order would apply them;
bounds and bad input refused with nothing changed; a change on one device arriving live on
the user's other device; ordering from the cart (which empties it, and replays).

Every hub start costs a few seconds, so related cases share one hub."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from tornado.websocket import websocket_connect

from tests.checkout_helpers import CART, O, coupon, give_points, stock
from tests.conftest import interleave

pytestmark = [pytest.mark.timeout(120), pytest.mark.stores]
CART_FIELDS = {"items", "subtotal", "coupon_code", "discount", "points_used", "total", "currency", "updated_at"}
ITEM_FIELDS = {"product_id", "name", "price", "quantity", "available"}


@pytest.fixture
def hub_env(hub_env):
    hub_env.update({"HUB_SWEEP_INTERVAL_S": "3600", "HUB_CART_MAX_ITEMS": "3"})
    return hub_env


async def put_item(api, token, product_id, quantity):
    return await api.call("PUT", f"{CART}/items/{product_id}", {"quantity": quantity}, token=token)


async def cart_of(api, token) -> dict:
    r = await api.call("GET", CART, token=token)
    assert r.status == 200, r
    assert set(r.data) >= CART_FIELDS and all(set(i) >= ITEM_FIELDS for i in r.data["items"]), r.data
    return r.data


async def test_a_cart_is_read_live_and_never_holds_stock(api):
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    kettle = await api.product(admin, price="19.99", stock=5)
    mug = await api.product(admin, price="3.50", stock=100)
    empty = await cart_of(api, token)
    assert (empty["items"], empty["subtotal"], empty["total"], empty["currency"]) == ([], "0.00", "0.00", "USD")

    r = await put_item(api, token, kettle["id"], 2)
    assert r.status == 200, r
    assert await stock(api, kettle["id"]) == 5  # the cart reserves nothing
    assert (await put_item(api, token, mug["id"], 3)).status == 200
    assert (await put_item(api, token, kettle["id"], 7)).status == 200  # more than in stock: kept
    cart = await cart_of(api, token)
    assert [(i["product_id"], i["quantity"], i["available"], i["price"]) for i in cart["items"]] == \
        [(kettle["id"], 7, 5, "19.99"), (mug["id"], 3, 100, "3.50")]
    assert (cart["subtotal"], cart["total"]) == ("150.43", "150.43")

    # Prices and stock are read when shown.
    assert (await api.call("PATCH", f"/api/v1/products/{mug['id']}", {"price": "4.00"}, token=admin)).status == 200
    assert (await api.call("POST", f"/api/v1/products/{kettle['id']}/stock", {"set": 9}, token=admin)).status == 200
    cart = await cart_of(api, token)
    assert [(i["price"], i["available"]) for i in cart["items"]] == [("19.99", 9), ("4.00", 100)]
    assert cart["subtotal"] == "151.93"

    # 0 removes; a deleted product drops out of the cart.
    assert [i["product_id"] for i in (await put_item(api, token, kettle["id"], 0)).data["items"]] == [mug["id"]]
    assert (await api.call("DELETE", f"/api/v1/products/{mug['id']}", token=admin)).status in (200, 204)
    assert (await cart_of(api, token))["items"] == []

    assert (await put_item(api, token, kettle["id"], 1)).status == 200
    r = await api.call("DELETE", CART, token=token)
    assert r.status == 200 and r.data["items"] == [], r


async def test_bad_cart_input_is_refused_and_changes_nothing(api):
    admin = await api.admin_token()
    token = (await api.register())["access_token"]
    products = [await api.product(admin, price="1.00", stock=10) for _ in range(4)]
    assert (await put_item(api, token, products[0]["id"], 2)).status == 200
    before = await cart_of(api, token)
    for product_id, body in [
        (products[1]["id"], {"quantity": -1}),
        (products[1]["id"], {"quantity": 1001}),
        (products[1]["id"], {"quantity": "2"}),
        (products[1]["id"], {"quantity": 1.5}),
        (products[1]["id"], {}),
        ("no-such-product", {"quantity": 1}),
        ("x" * 65, {"quantity": 1}),
    ]:
        r = await api.call("PUT", f"{CART}/items/{product_id}", body, token=token)
        assert r.status == 422, (product_id, body, r)
    r = await api.call("PUT", f"{CART}/items/{products[1]['id']}", body=b"{nope", token=token)
    assert r.status == 400, r
    for body in ({"code": "x" * 10_000}, {"code": ""}, {"code": 5}, {"code": "NOSUCH"}):
        r = await api.call("PUT", f"{CART}/coupon", body, token=token)
        assert r.status == 422, (body, r)
    assert r.error_code == "coupon_invalid" and r.data["error"]["details"]["reason"] == "unknown"
    for body in ({"points": -5}, {"points": 10**12}, {"points": "many"}):
        assert (await api.call("PUT", f"{CART}/points", body, token=token)).status == 422, body
    assert await cart_of(api, token) == before

    # Bounded: HUB_CART_MAX_ITEMS (3 here) products; changing one already there still works.
    for p in products[1:3]:
        assert (await put_item(api, token, p["id"], 1)).status == 200
    r = await put_item(api, token, products[3]["id"], 1)
    assert r.status == 422 and r.error_code == "cart_full", r
    assert (await put_item(api, token, products[0]["id"], 5)).status == 200

    # Only the signed-in owner: no token → 401; a service key is not a user.
    assert (await api.call("GET", CART)).status == 401
    assert (await api.call("PUT", f"{CART}/items/{products[0]['id']}", {"quantity": 1})).status == 401
    other = (await api.register())["access_token"]
    assert (await cart_of(api, other))["items"] == []


async def test_coupon_and_points_show_what_the_order_would_take(api):
    admin = await api.admin_token()
    session = await api.register()
    token = session["access_token"]
    await give_points(api, session["user"]["id"], token, 250)
    product = await api.product(admin, price="10.00", stock=10)
    c = await coupon(api, admin, code=f"K{uuid.uuid4().hex[:8]}", kind="percent", value="10", min_subtotal="15")
    assert (await put_item(api, token, product["id"], 1)).status == 200
    r = await api.call("PUT", f"{CART}/coupon", {"code": c["code"]}, token=token)
    assert r.status == 422 and r.data["error"]["details"]["reason"] == "min_subtotal", r
    assert (await put_item(api, token, product["id"], 2)).status == 200
    r = await api.call("PUT", f"{CART}/coupon", {"code": c["code"].lower()}, token=token)
    assert r.status == 200 and (r.data["coupon_code"], r.data["discount"]) == (c["code"], "2.00"), r
    r = await api.call("PUT", f"{CART}/points", {"points": 1000}, token=token)  # more than the balance: shown as 250
    assert (r.data["points_used"], r.data["total"]) == (250, "15.50"), r
    # Below the minimum again: the coupon stays, gives nothing, and says why.
    cart = (await put_item(api, token, product["id"], 1)).data
    assert (cart["coupon_code"], cart["discount"], cart["coupon_error"]["reason"]) == (c["code"], "0.00", "min_subtotal")
    assert (await api.call("DELETE", f"{CART}/coupon", token=token)).data["coupon_code"] is None


async def test_ordering_from_the_cart_empties_it_and_a_replay_finds_the_order(api):
    admin = await api.admin_token()
    session = await api.register()
    token = session["access_token"]
    await give_points(api, session["user"]["id"], token, 100)
    product = await api.product(admin, price="10.00", stock=10)
    c = await coupon(api, admin, code=f"K{uuid.uuid4().hex[:8]}", kind="amount", value="3.00")
    r = await api.call("POST", O, {"from_cart": True}, token=token)
    assert r.status == 422 and r.error_code == "cart_empty", r
    await put_item(api, token, product["id"], 2)
    await api.call("PUT", f"{CART}/coupon", {"code": c["code"]}, token=token)
    await api.call("PUT", f"{CART}/points", {"points": 100}, token=token)
    shown = await cart_of(api, token)
    headers = {"Idempotency-Key": "cart-order-1"}
    r = await api.call("POST", O, {"from_cart": True}, token=token, headers=headers)
    assert r.status == 201, r
    assert (r.data["subtotal"], r.data["discount"], r.data["points_used"], r.data["total"]) == \
        (shown["subtotal"], shown["discount"], shown["points_used"], shown["total"]) == ("20.00", "3.00", 100, "16.00")
    assert await stock(api, product["id"]) == 8
    assert (await cart_of(api, token))["items"] == []
    again = await api.call("POST", O, {"from_cart": True}, token=token, headers=headers)
    assert again.status == 201 and again.data["id"] == r.data["id"], again
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await stock(api, product["id"]) == 8


async def test_concurrent_changes_from_two_devices_are_all_kept(api, hub_server, monkeypatch):
    interleave(hub_server.hub, monkeypatch)
    admin = await api.admin_token()
    products = [await api.product(admin, price="1.00", stock=10) for _ in range(3)]
    token = (await api.register())["access_token"]
    results = await asyncio.gather(*(put_item(api, token, p["id"], i + 1) for i, p in enumerate(products)))
    assert all(r.status == 200 for r in results), results
    cart = await cart_of(api, token)
    assert sorted((i["product_id"], i["quantity"]) for i in cart["items"]) == \
        sorted((p["id"], i + 1) for i, p in enumerate(products))


async def test_a_change_on_one_device_arrives_live_on_the_other(api):
    admin = await api.admin_token()
    email = f"two-{uuid.uuid4().hex[:8]}@example.com"
    await api.register(email=email)
    laptop = (await api.call("POST", "/api/v1/auth/login", {"email": email, "password": "correct-horse"})).data
    phone = (await api.call("POST", "/api/v1/auth/login", {"email": email, "password": "correct-horse"})).data
    product = await api.product(admin, price="2.50", stock=10)
    port = api.base_url.rsplit(":", 1)[1]
    ws = await websocket_connect(f"ws://127.0.0.1:{port}/ws?token={laptop['access_token']}")
    try:
        await ws.write_message(json.dumps({"op": "subscribe", "channel": "user"}))
        subscribed = json.loads(await ws.read_message())
        assert subscribed["type"] == "subscribed", subscribed
        assert (await put_item(api, phone["access_token"], product["id"], 4)).status == 200
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 5))
        assert (frame["type"], frame["channel"], frame["seq"]) == ("event", "user", subscribed["seq"] + 1), frame
        assert frame["event"]["type"] == "cart.updated" and frame["event"]["subject"] == phone["user"]["id"]
        shown = frame["event"]["data"]["cart"]
        assert [(i["product_id"], i["quantity"]) for i in shown["items"]] == [(product["id"], 4)]
        assert shown["subtotal"] == "10.00"
        assert (await api.call("DELETE", CART, token=phone["access_token"])).status == 200
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 5))
        assert frame["event"]["type"] == "cart.updated" and frame["event"]["data"]["cart"]["items"] == []
    finally:
        ws.close()
