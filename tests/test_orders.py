"""Orders over real HTTP against an in-process hub (CONTRACT §2 "Orders"), and the clean-up
of what a dead process or an unpaid order leaves behind.

Every hub start costs a few seconds (the bundled broker delays the first consumer-group
join), so related cases share one hub and loop over a table, naming the case on failure."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from config.settings import load_settings
from domain.ordering import _IDEMPOTENCY_NAMESPACE
from hub.wiring.server import HubServer
from tests.conftest import SERVICE_KEY, Api


O = "/api/v1/orders"

STATUSES = ["pending", "confirmed", "processing", "shipped", "delivered", "completed", "returned", "refunded",
            "cancelled"]
# CONTRACT §2, written out independently of domain/orders.py.
ALLOWED = {
    ("pending", "confirmed"), ("pending", "cancelled"),
    ("confirmed", "processing"), ("confirmed", "cancelled"),
    ("processing", "shipped"), ("processing", "cancelled"),
    ("shipped", "delivered"), ("shipped", "returned"),
    ("delivered", "completed"), ("delivered", "returned"),
    ("returned", "refunded"),
}
# How an admin reaches each status from a new (pending) order.
PATH = {
    "pending": [],
    "confirmed": ["confirmed"],
    "processing": ["confirmed", "processing"],
    "shipped": ["confirmed", "processing", "shipped"],
    "delivered": ["confirmed", "processing", "shipped", "delivered"],
    "completed": ["confirmed", "processing", "shipped", "delivered", "completed"],
    "returned": ["confirmed", "processing", "shipped", "returned"],
    "refunded": ["confirmed", "processing", "shipped", "returned", "refunded"],
    "cancelled": ["cancelled"],
}


@pytest.fixture
def hub_env(hub_env):
    """No background sweep in these tests (they run the sweep themselves, or start their own hub)."""
    hub_env["HUB_SWEEP_INTERVAL_S"] = "3600"
    return hub_env


async def stock(api, product_id: str) -> int:
    r = await api.call("GET", f"/api/v1/products/{product_id}")
    assert r.status == 200, r
    return r.data["stock"]


async def place(api, token: str, *lines, key: str | None = None, **extra):
    """POST an order of (product_id, quantity) lines."""
    body = {"items": [{"product_id": pid, "quantity": qty} for pid, qty in lines], **extra}
    return await api.call("POST", O, body, token=token, headers={"Idempotency-Key": key} if key else None)


async def placed(api, token: str, *lines) -> dict:
    r = await place(api, token, *lines)
    assert r.status == 201, r
    return r.data


async def move(api, admin: str, order_id: str, status: str, note: str | None = None):
    return await api.call("POST", f"{O}/{order_id}/transitions", {"status": status, "note": note}, token=admin)


async def setup(api, **product):
    """An admin token, a customer session and one product."""
    admin = await api.admin_token()
    user = await api.register()
    return admin, user, await api.product(admin, **product)


# Placing -------------------------------------------------------------------------------

@pytest.mark.stores
async def test_place_order_prices_on_the_server_and_takes_summed_stock(api):
    admin, user, mug = await setup(api, price="12.50", stock=10)
    pen = await api.product(admin, price="0.99", stock=5)
    token = user["access_token"]
    r = await api.call("POST", O, {
        "items": [{"product_id": mug["id"], "quantity": 2, "price": "0.01", "unit_price": "0.01"},
                  {"product_id": pen["id"], "quantity": 3, "unit_price": 0},
                  {"product_id": mug["id"], "quantity": 1, "price": "0.01"}],
        "total": "0.01", "note": "ring twice", "shipping_address": {"city": "Lyon"},
    }, token=token)
    assert r.status == 201, r
    order = r.data
    assert isinstance(order["id"], str) and order["id"]
    assert re.fullmatch(r"ORD-\d{6}", order["number"]), order["number"]
    assert (order["user_id"], order["status"], order["currency"]) == (user["user"]["id"], "pending", "USD")
    lines = {line["product_id"]: (line["quantity"], line["unit_price"], line["line_total"]) for line in order["items"]}
    assert lines == {mug["id"]: (3, "12.50", "37.50"), pen["id"]: (3, "0.99", "2.97")}
    assert len(order["items"]) == 2
    assert order["total"] == "40.47"
    assert (order["note"], order["shipping_address"]) == ("ring twice", {"city": "Lyon"})
    assert [h["status"] for h in order["status_history"]] == ["pending"] and order["status_history"][0]["at"]
    assert order["created_at"]
    assert (await stock(api, mug["id"]), await stock(api, pen["id"])) == (7, 2)

    got = await api.call("GET", f"{O}/{order['id']}", token=token)
    assert got.status == 200 and got.data == order

    others = [await placed(api, token, (pen["id"], 1)) for _ in range(2)]
    numbers = [order["number"]] + [o["number"] for o in others]
    assert len(set(numbers)) == 3 and all(re.fullmatch(r"ORD-\d{6}", n) for n in numbers)
    assert len({order["id"]} | {o["id"] for o in others}) == 3
    assert await stock(api, pen["id"]) == 0


async def test_out_of_stock_reserves_nothing(api):
    admin, user, plenty = await setup(api, stock=10)
    scarce = (await api.product(admin, stock=2))["id"]
    token = user["access_token"]
    cases = [  # lines (the product with enough stock first, so it would be taken before the failure)
        [(plenty["id"], 3), (scarce, 5)],
        [(plenty["id"], 3), (scarce, 1), (scarce, 2)],  # two lines that only fail once summed
    ]
    for lines in cases:
        r = await place(api, token, *lines)
        assert r.status == 409 and r.error_code == "out_of_stock", (lines, r)
        requested = sum(q for pid, q in lines if pid == scarce)
        assert r.data["error"]["details"] == [{"product_id": scarce, "requested": requested, "available": 2}], r
        assert (await stock(api, plenty["id"]), await stock(api, scarce)) == (10, 2), lines
    assert (await api.call("GET", O, token=token)).data["total"] == 0
    # Exactly what is there can still be ordered.
    assert (await place(api, token, (plenty["id"], 10), (scarce, 2))).status == 201
    assert (await stock(api, plenty["id"]), await stock(api, scarce)) == (0, 0)


@pytest.mark.stores
async def test_concurrent_orders_never_oversell_and_give_back_partial_reservations(api, hub_server, interleaved):
    admin, user, plenty = await setup(api, stock=100)
    scarce = (await api.product(admin, stock=3))["id"]
    token = user["access_token"]
    results = await asyncio.gather(*(place(api, token, (plenty["id"], 2), (scarce, 1)) for _ in range(10)))
    assert sorted(r.status for r in results) == [201] * 3 + [409] * 7, results
    assert {r.error_code for r in results if r.status == 409} == {"out_of_stock"}
    assert (await stock(api, plenty["id"]), await stock(api, scarce)) == (94, 0)
    assert (await api.call("GET", O, token=token)).data["total"] == 3
    for pid in (plenty["id"], scarce):  # every reservation marker was settled or undone
        assert (await hub_server.hub.db["products"].find_one({"_id": pid}))["holds"] == []


@pytest.mark.stores
async def test_stock_gone_while_reserving_gives_back_what_was_taken(api, hub_server, monkeypatch):
    """The last units go to another order between the availability check and the reservation."""
    admin, user, plenty = await setup(api, stock=10)
    scarce = (await api.product(admin, stock=2))["id"]
    store = hub_server.hub.stores.products
    real_take = store.take

    async def take(product_id, qty, *args, **kwargs):
        if product_id == scarce:
            assert await store.adjust_stock(scarce, -2, datetime.now(timezone.utc), "rival order")
        return await real_take(product_id, qty, *args, **kwargs)

    monkeypatch.setattr(store, "take", take)
    r = await place(api, user["access_token"], (plenty["id"], 3), (scarce, 1))
    assert r.status == 409 and r.error_code == "out_of_stock", r
    assert {"product_id": scarce, "requested": 1, "available": 0} in r.data["error"]["details"], r
    assert (await stock(api, plenty["id"]), await stock(api, scarce)) == (10, 0)
    assert (await api.call("GET", O, token=user["access_token"])).data["total"] == 0
    assert (await hub_server.hub.db["products"].find_one({"_id": plenty["id"]}))["holds"] == []
    assert await hub_server.hub.db["orders"].count_documents({}) == 0


async def test_bad_order_input_is_refused_and_changes_nothing(api):
    admin, user, product = await setup(api, stock=1000)
    pid, token = product["id"], user["access_token"]
    one = {"product_id": pid, "quantity": 1}
    cases = [  # body, status, code, a field the details must name (or None)
        *[({"items": [{"product_id": pid, "quantity": q}]}, 422, "validation_failed", "items.0.quantity")
          for q in (0, -1, 1.5, "2", True, None)],
        ({"items": [{"product_id": pid}]}, 422, "validation_failed", "items.0.quantity"),
        ({"items": [{"quantity": 1}]}, 422, "validation_failed", "items.0.product_id"),
        ({"items": [{"product_id": 5, "quantity": 1}]}, 422, "validation_failed", "items.0.product_id"),
        ({"items": [one, {"product_id": pid, "quantity": 0}]}, 422, "validation_failed", "items.1.quantity"),
        ({"items": []}, 422, "validation_failed", "items"),
        ({"items": [one] * 101}, 422, "validation_failed", "items"),
        ({"items": [one] * 1000}, 422, "validation_failed", "items"),
        ({"items": None}, 422, "validation_failed", "items"),
        ({"items": "abc"}, 422, "validation_failed", "items"),
        ({"items": one}, 422, "validation_failed", "items"),
        ({}, 422, "validation_failed", "items"),
        ({"items": [{"product_id": "no-such-product", "quantity": 1}]}, 422, "unknown_product", None),
        ({"items": [one, {"product_id": "no-such-product", "quantity": 1}]}, 422, "unknown_product", None),
        ([one], 422, "validation_failed", None),
        ("just a string", 422, "validation_failed", None),
    ]
    for body, status, code, field in cases:
        r = await api.call("POST", O, body, token=token)
        assert r.status == status and r.error_code == code, (body, r)
        if field is not None:
            assert field in {d["field"] for d in r.data["error"]["details"]}, (body, r)
    for raw in (b'{"items": [', b"", b"\xff\xfe"):
        r = await api.call("POST", O, body=raw, token=token, headers={"Content-Type": "application/json"})
        expected = (422, "validation_failed") if raw == b"" else (400, "malformed_json")
        assert (r.status, r.error_code) == expected, (raw, r)
    unknown = await api.call("POST", O, {"items": [{"product_id": "no-such-product", "quantity": 1}]}, token=token)
    assert unknown.data["error"]["details"][0]["product_id"] == "no-such-product"
    assert await stock(api, pid) == 1000
    assert (await api.call("GET", O, token=token)).data["total"] == 0

    # 100 lines is the limit, not beyond it: they are summed into one line.
    r = await api.call("POST", O, {"items": [one] * 100}, token=token)
    assert r.status == 201 and [line["quantity"] for line in r.data["items"]] == [100], r
    assert await stock(api, pid) == 900


async def test_placing_needs_a_signed_in_user(api):
    admin, user, product = await setup(api, stock=5)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    assert (await api.call("POST", O, body)).status == 401
    assert (await api.call("POST", O, body, token="garbage")).status == 401
    assert (await api.call("POST", O, body, headers={"X-API-Key": SERVICE_KEY})).status == 401
    assert (await api.call("GET", O)).status == 401
    assert await stock(api, product["id"]) == 5


# Idempotency ---------------------------------------------------------------------------

async def test_idempotency_key(api):
    admin, alice, product = await setup(api, stock=10)
    bob = await api.register()
    pid, token = product["id"], alice["access_token"]

    first = await place(api, token, (pid, 2), key="k-1")
    assert first.status == 201 and "Idempotent-Replayed" not in first.headers, first
    again = await place(api, token, (pid, 2), key="k-1")
    assert again.status == 201 and again.headers.get("Idempotent-Replayed") == "true", again
    assert again.data == first.data
    assert await stock(api, pid) == 8

    for lines, extra in (([(pid, 3)], {}), ([(pid, 1), (pid, 1)], {}), ([(pid, 2)], {"note": "other"})):
        reused = await place(api, token, *lines, key="k-1", **extra)
        assert reused.status == 422 and reused.error_code == "idempotency_key_reused", (lines, extra, reused)
    assert await stock(api, pid) == 8

    # The key is scoped to its user: Bob's "k-1" is another order.
    bobs = await place(api, bob["access_token"], (pid, 2), key="k-1")
    assert bobs.status == 201 and bobs.data["id"] != first.data["id"] and bobs.data["user_id"] == bob["user"]["id"]
    assert "Idempotent-Replayed" not in bobs.headers
    assert await stock(api, pid) == 6
    # Without a key, the same body twice is two orders.
    assert (await place(api, token, (pid, 1))).data["id"] != (await place(api, token, (pid, 1))).data["id"]
    assert await stock(api, pid) == 4
    assert (await api.call("GET", O, token=token)).data["total"] == 3

    too_long = await place(api, token, (pid, 1), key="k" * 256)
    assert too_long.status == 422, too_long
    assert await stock(api, pid) == 4


@pytest.mark.stores
async def test_concurrent_requests_with_one_idempotency_key_make_one_order(api, interleaved):
    admin, user, product = await setup(api, stock=10)
    token = user["access_token"]
    results = await asyncio.gather(*(place(api, token, (product["id"], 3), key="same") for _ in range(5)))
    assert [r.status for r in results] == [201] * 5, results
    assert len({r.data["id"] for r in results}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in results) == 4
    assert await stock(api, product["id"]) == 7
    assert (await api.call("GET", O, token=token)).data["total"] == 1


# Who sees what -------------------------------------------------------------------------

@pytest.mark.stores
async def test_visibility(api):
    admin, alice, product = await setup(api, stock=10)
    bob = await api.register()
    a_token, b_token = alice["access_token"], bob["access_token"]
    mine = await placed(api, a_token, (product["id"], 1))
    theirs = await placed(api, b_token, (product["id"], 1))

    own = await api.call("GET", O, token=a_token)
    assert own.status == 200 and [o["id"] for o in own.data["items"]] == [mine["id"]] and own.data["total"] == 1
    sneaky = await api.call("GET", f"{O}?user_id={bob['user']['id']}", token=a_token)
    assert [o["id"] for o in sneaky.data["items"]] == [mine["id"]]
    hidden = await api.call("GET", f"{O}/{theirs['id']}", token=a_token)
    assert hidden.status == 404 and hidden.error_code == "order_not_found", hidden
    assert (await api.call("POST", f"{O}/{theirs['id']}/cancel", {}, token=a_token)).status == 404
    assert (await api.call("GET", f"{O}/{theirs['id']}", token=b_token)).data["status"] == "pending"

    admin_all = await api.call("GET", O, token=admin)
    assert admin_all.data["total"] == 2 and {o["id"] for o in admin_all.data["items"]} == {mine["id"], theirs["id"]}
    admin_bob = await api.call("GET", f"{O}?user_id={bob['user']['id']}", token=admin)
    assert [o["id"] for o in admin_bob.data["items"]] == [theirs["id"]]
    service = {"X-API-Key": SERVICE_KEY}
    for reader in ({"token": admin}, {"headers": service}):
        r = await api.call("GET", f"{O}/{theirs['id']}", **reader)
        assert r.status == 200 and r.data == theirs, (reader, r)
    assert (await api.call("GET", O, headers=service)).data["total"] == 2
    assert (await api.call("GET", f"{O}/{theirs['id']}", headers={"X-API-Key": "wrong"})).status == 401
    assert (await api.call("GET", f"{O}/{theirs['id']}")).status == 401
    assert (await api.call("GET", f"{O}/no-such-order", token=admin)).status == 404


# Status table --------------------------------------------------------------------------

@pytest.mark.parametrize("start", STATUSES)
async def test_every_transition_from(api, start):
    """For `start`, every one of the 9 targets on its own order: allowed → 200, else 409."""
    admin, user, product = await setup(api, stock=100)
    for target in STATUSES:
        order = await placed(api, user["access_token"], (product["id"], 1))
        for step in PATH[start]:
            r = await move(api, admin, order["id"], step)
            assert r.status == 200 and r.data["status"] == step, (start, step, r)
        before = (await api.call("GET", f"{O}/{order['id']}", token=admin)).data
        assert before["status"] == start
        r = await move(api, admin, order["id"], target, note=f"to {target}")
        after = (await api.call("GET", f"{O}/{order['id']}", token=admin)).data
        if (start, target) in ALLOWED:
            assert r.status == 200 and r.data["status"] == target, (start, target, r)
            assert after["status_history"][:-1] == before["status_history"], (start, target)
            assert (after["status_history"][-1]["status"], after["status_history"][-1]["note"]) == (target, f"to {target}")
            assert after["status"] == target
        else:
            assert r.status == 409 and r.error_code == "invalid_transition", (start, target, r)
            assert after == before, (start, target)


async def test_transition_guards(api):
    admin, user, product = await setup(api, stock=5)
    order = await placed(api, user["access_token"], (product["id"], 1))
    for status in ("teleported", "placing", "aborted", "PENDING", ""):
        r = await move(api, admin, order["id"], status)
        assert r.status == 422 and r.error_code == "validation_failed", (status, r)
    assert (await api.call("POST", f"{O}/{order['id']}/transitions", {}, token=admin)).status == 422
    for token, status in ((user["access_token"], 403), (None, 401)):
        r = await api.call("POST", f"{O}/{order['id']}/transitions", {"status": "confirmed"}, token=token)
        assert r.status == status, (token, r)
    assert (await move(api, admin, "no-such-order", "confirmed")).status == 404
    got = (await api.call("GET", f"{O}/{order['id']}", token=admin)).data
    assert got["status"] == "pending" and len(got["status_history"]) == 1


# Cancelling ----------------------------------------------------------------------------

@pytest.mark.stores
async def test_cancel_gives_stock_back_exactly_once(api):
    admin, user, product = await setup(api, stock=20)
    other = (await api.product(admin, stock=20))["id"]
    pid, token = product["id"], user["access_token"]

    # Owner: pending and confirmed, with a reason that lands in the history.
    for path in ([], ["confirmed"]):
        order = await placed(api, token, (pid, 3), (other, 2))
        for step in path:
            assert (await move(api, admin, order["id"], step)).status == 200
        assert (await stock(api, pid), await stock(api, other)) == (17, 18)
        r = await api.call("POST", f"{O}/{order['id']}/cancel", {"reason": "changed my mind"}, token=token)
        assert r.status == 200 and r.data["status"] == "cancelled", (path, r)
        assert r.data["status_history"][-1]["status"] == "cancelled"
        assert r.data["status_history"][-1]["note"] == "changed my mind"
        assert (await stock(api, pid), await stock(api, other)) == (20, 20), path
        again = await api.call("POST", f"{O}/{order['id']}/cancel", token=token)
        assert again.status == 409 and again.error_code == "invalid_transition", again
        assert (await api.call("POST", f"{O}/{order['id']}/cancel", token=admin)).status == 409
        assert (await stock(api, pid), await stock(api, other)) == (20, 20), path

    # Processing: not the owner's to cancel any more, but an admin's.
    order = await placed(api, token, (pid, 4))
    for step in ("confirmed", "processing"):
        assert (await move(api, admin, order["id"], step)).status == 200
    refused = await api.call("POST", f"{O}/{order['id']}/cancel", token=token)
    assert refused.status == 409 and refused.error_code == "invalid_transition", refused
    assert (await api.call("GET", f"{O}/{order['id']}", token=token)).data["status"] == "processing"
    assert await stock(api, pid) == 16
    ok = await api.call("POST", f"{O}/{order['id']}/cancel", {"reason": "warehouse fire"}, token=admin)
    assert ok.status == 200 and ok.data["status"] == "cancelled", ok
    assert await stock(api, pid) == 20

    # Shipped: nobody cancels.
    order = await placed(api, token, (pid, 1))
    for step in ("confirmed", "processing", "shipped"):
        assert (await move(api, admin, order["id"], step)).status == 200
    assert (await api.call("POST", f"{O}/{order['id']}/cancel", token=admin)).status == 409
    assert await stock(api, pid) == 19

    # Cancelling through the transitions endpoint gives stock back too.
    order = await placed(api, token, (pid, 5))
    assert (await move(api, admin, order["id"], "cancelled")).status == 200
    assert await stock(api, pid) == 19


@pytest.mark.stores
async def test_concurrent_cancels_give_stock_back_once(api, interleaved):
    admin, user, product = await setup(api, stock=10)
    token = user["access_token"]
    for callers in ([token, token], [token, admin, token, admin, token]):
        order = await placed(api, token, (product["id"], 4))
        assert await stock(api, product["id"]) == 6
        results = await asyncio.gather(*(api.call("POST", f"{O}/{order['id']}/cancel", token=t) for t in callers))
        assert sorted(r.status for r in results) == [200] + [409] * (len(callers) - 1), results
        assert await stock(api, product["id"]) == 10
        got = (await api.call("GET", f"{O}/{order['id']}", token=token)).data
        assert [h["status"] for h in got["status_history"]] == ["pending", "cancelled"]


# Clean-up ------------------------------------------------------------------------------

@pytest.mark.stores
async def test_unpaid_order_is_cancelled_after_the_payment_timeout(hub_env):
    hub_env["ORDER_PAYMENT_TIMEOUT_S"] = "1"
    hub_env["HUB_SWEEP_INTERVAL_S"] = "0.2"
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        admin, user, product = await setup(api, stock=10)
        token = user["access_token"]
        unpaid = await placed(api, token, (product["id"], 2))
        paid = await placed(api, token, (product["id"], 3))
        assert (await move(api, admin, paid["id"], "confirmed")).status == 200
        assert await stock(api, product["id"]) == 5

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8
        while loop.time() < deadline:
            got = (await api.call("GET", f"{O}/{unpaid['id']}", token=token)).data
            if got["status"] != "pending":
                break
            await asyncio.sleep(0.2)
        assert got["status"] == "cancelled", got
        assert got["status_history"][-1]["note"] == "payment timeout"
        for _ in range(3):  # more sweeps: nothing is given back twice, the paid order stays
            await server.hub.services.orders.sweep()
        assert await stock(api, product["id"]) == 7
        assert (await api.call("GET", f"{O}/{paid['id']}", token=token)).data["status"] == "confirmed"
        assert len((await api.call("GET", f"{O}/{unpaid['id']}", token=token)).data["status_history"]) == 2
    finally:
        await server.stop()


async def test_a_fresh_order_is_not_cancelled_by_the_sweep(api, hub_server):
    admin, user, product = await setup(api, stock=10)
    order = await placed(api, user["access_token"], (product["id"], 2))
    await hub_server.hub.services.orders.sweep()  # the default timeout is 30 minutes
    assert (await api.call("GET", f"{O}/{order['id']}", token=admin)).data["status"] == "pending"
    assert await stock(api, product["id"]) == 8


@pytest.mark.stores
async def test_sweeper_gives_back_an_abandoned_reservation_once(api, hub_server):
    hub = hub_server.hub
    admin = await api.admin_token()
    dead, alive = (await api.product(admin, stock=10))["id"], (await api.product(admin, stock=10))["id"]
    now = datetime.now(timezone.utc)
    # A process died after taking stock for an order it never wrote...
    assert await hub.stores.products.take(dead, 3, "deadbeef:take", expires_at=now - timedelta(seconds=1), now=now,
                                        order_id="deadbeef")
    # ...while another one is still placing its order (its reservation has not expired).
    assert await hub.stores.products.take(alive, 4, "cafebabe:take", expires_at=now + timedelta(seconds=30), now=now,
                                        order_id="cafebabe")
    assert (await stock(api, dead), await stock(api, alive)) == (7, 6)
    await hub.services.orders.sweep()
    assert (await stock(api, dead), await stock(api, alive)) == (10, 6)
    await hub.services.orders.sweep()
    assert (await stock(api, dead), await stock(api, alive)) == (10, 6)


@pytest.mark.stores
async def test_sweeper_aborts_a_stalled_placing_order_once(api, hub_server):
    hub = hub_server.hub
    admin, user, _ = await setup(api)
    now = datetime.now(timezone.utc)
    past = now - timedelta(seconds=5)
    cases = {  # order id: expiry of its take marker (gone by, or not yet though the order itself is stale)
        "feedface" * 4: past,
        "0ddba11" * 4: now + timedelta(seconds=30),
    }
    products = {}
    for order_id, marker_expiry in cases.items():
        pid = (await api.product(admin, price="10.00", stock=10))["id"]
        products[order_id] = pid
        assert await hub.stores.orders.insert({
            "_id": order_id, "number": f"ORD-9{len(products):05d}", "user_id": user["user"]["id"], "status": "placing",
            "items": [{"product_id": pid, "name": "x", "sku": None, "unit_price_minor": 1000, "quantity": 4,
                       "line_total_minor": 4000}],
            "total_minor": 4000, "currency": "USD", "shipping_address": None, "note": None, "created_at": past,
            "updated_at": past, "status_history": [], "outbox": [], "idempotency_key": None, "fingerprint": "x",
            "placing_expires_at": past, "restock_pending": False, "restocked": [],
        })
        assert await hub.stores.products.take(pid, 4, f"{order_id}:take", expires_at=marker_expiry, now=past,
                                            order_id=order_id)
        assert await stock(api, pid) == 6
        # A placing order is invisible.
        assert (await api.call("GET", f"{O}/{order_id}", token=admin)).status == 404
    for _ in range(2):
        await hub.services.orders.sweep()
        for order_id, pid in products.items():
            assert await stock(api, pid) == 10, order_id
            assert (await api.call("GET", f"{O}/{order_id}", token=admin)).status == 404
    assert (await api.call("GET", O, token=admin)).data["total"] == 0


@pytest.mark.stores
async def test_sweeper_finishes_an_interrupted_cancellation_once(api, hub_server):
    """A process died while cancelling: one product's stock was given back (its marker left
    behind, not yet recorded on the order), the other's not yet."""
    hub = hub_server.hub
    admin, user, product = await setup(api, stock=10)
    other = (await api.product(admin, stock=10))["id"]
    order = await placed(api, user["access_token"], (product["id"], 3), (other, 2))
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    assert await hub.stores.orders.move(order["id"], "pending", "cancelled", now=past, event=None,
                                      history={"status": "cancelled", "at": past, "note": None, "actor": "test"},
                                      extra={"restock_pending": True})
    await hub.stores.products.give_back(product["id"], 3, f"{order['id']}:restock", expires_at=past, now=past,
                                      order_id=order["id"], reason="order_cancelled")
    assert (await stock(api, product["id"]), await stock(api, other)) == (10, 8)
    for _ in range(2):
        await hub.services.orders.sweep()
        assert (await stock(api, product["id"]), await stock(api, other)) == (10, 10)
    assert (await api.call("GET", f"{O}/{order['id']}", token=admin)).data["status"] == "cancelled"


async def test_deleting_a_product_keeps_its_orders_readable(api):
    admin, user, product = await setup(api, name="Vintage Lamp", price="4.25", stock=5)
    token = user["access_token"]
    order = await placed(api, token, (product["id"], 2))
    assert (await api.call("DELETE", f"/api/v1/products/{product['id']}", token=admin)).status == 204
    for reader in (token, admin):
        got = await api.call("GET", f"{O}/{order['id']}", token=reader)
        assert got.status == 200, got
        assert [(i["name"], i["unit_price"], i["quantity"], i["line_total"]) for i in got.data["items"]] == [
            ("Vintage Lamp", "4.25", 2, "8.50")]
        assert got.data["total"] == "8.50"
    assert [o["id"] for o in (await api.call("GET", O, token=token)).data["items"]] == [order["id"]]
    again = await place(api, token, (product["id"], 1))
    assert again.status == 422 and again.error_code == "unknown_product", again
    cancelled = await api.call("POST", f"{O}/{order['id']}/cancel", token=token)
    assert cancelled.status == 200 and cancelled.data["status"] == "cancelled", cancelled


# Races and crash leftovers ------------------------------------------------------------

async def abandon_placement(hub, user: dict, product_id: str, quantity: int, key: str) -> str:
    """The state a process leaves when it dies mid-placement of an order with an
    Idempotency-Key (order `placing`, stock taken), once the sweeper has cleaned it up."""
    user_id = user["user"]["id"]
    order_id = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{user_id}\n{key}").hex
    fingerprint = hashlib.sha256(json.dumps({"items": [(product_id, quantity)], "shipping_address": None, "note": None},
                                            sort_keys=True).encode()).hexdigest()
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    assert await hub.stores.orders.insert({
        "_id": order_id, "number": "ORD-900001", "user_id": user_id, "status": "placing",
        "items": [{"product_id": product_id, "name": "x", "sku": None, "unit_price_minor": 1000,
                   "quantity": quantity, "line_total_minor": 1000 * quantity}],
        "total_minor": 1000 * quantity, "currency": "USD", "shipping_address": None, "note": None, "created_at": past,
        "updated_at": past, "status_history": [], "outbox": [], "idempotency_key": key, "fingerprint": fingerprint,
        "placing_expires_at": past, "restock_pending": False, "restocked": [],
    })
    assert await hub.stores.products.take(product_id, quantity, f"{order_id}:take", expires_at=past, now=past,
                                        order_id=order_id)
    await hub.services.orders.sweep()
    return order_id


async def test_retry_after_an_abandoned_placement_places_the_order(api, hub_server):
    admin, user, product = await setup(api, price="10.00", stock=10)
    await abandon_placement(hub_server.hub, user, product["id"], 2, "retry-me")
    assert await stock(api, product["id"]) == 10
    r = await place(api, user["access_token"], (product["id"], 2), key="retry-me")
    assert r.status == 201, r
    assert await stock(api, product["id"]) == 8


@pytest.mark.stores
async def test_internal_statuses_are_never_listed(api, hub_server):
    admin, user, product = await setup(api, price="10.00", stock=10)
    await abandon_placement(hub_server.hub, user, product["id"], 2, "gone")
    for token in (user["access_token"], admin):
        for status in ("aborted", "placing"):
            r = await api.call("GET", f"{O}?status={status}", token=token)
            assert r.status == 422 or (r.status == 200 and r.data["items"] == [] and r.data["total"] == 0), (status, r)


async def _move_first(monkeypatch, store, intercept: str, from_status: str, to_status: str) -> None:
    """Make another move (from_status → to_status) land just before the first move to `intercept`."""
    real_move = store.move
    raced = []

    async def racing_move(order_id, current, target, **kwargs):
        if target == intercept and not raced:
            raced.append(order_id)
            now = datetime.now(timezone.utc)
            assert await real_move(order_id, from_status, to_status, now=now, event=None,
                                   history={"status": to_status, "at": now, "note": "meanwhile", "actor": "test"})
        return await real_move(order_id, current, target, **kwargs)

    monkeypatch.setattr(store, "move", racing_move)


@pytest.mark.stores
async def test_owner_cancel_racing_a_move_to_processing_is_refused(api, hub_server, monkeypatch):
    admin, user, product = await setup(api, stock=10)
    order = await placed(api, user["access_token"], (product["id"], 2))
    assert (await move(api, admin, order["id"], "confirmed")).status == 200
    await _move_first(monkeypatch, hub_server.hub.stores.orders, "cancelled", "confirmed", "processing")
    r = await api.call("POST", f"{O}/{order['id']}/cancel", token=user["access_token"])
    assert r.status == 409 and r.error_code == "invalid_transition", r
    assert (await api.call("GET", f"{O}/{order['id']}", token=admin)).data["status"] == "processing"
    assert await stock(api, product["id"]) == 8


@pytest.mark.stores
async def test_payment_timeout_spares_an_order_paid_meanwhile(api, hub_server, monkeypatch):
    admin, user, product = await setup(api, stock=10)
    order = await placed(api, user["access_token"], (product["id"], 2))
    hub = hub_server.hub
    await hub.db["orders"].update_one({"_id": order["id"]},
                                      {"$set": {"created_at": datetime.now(timezone.utc) - timedelta(hours=1)}})
    await _move_first(monkeypatch, hub.stores.orders, "cancelled", "pending", "confirmed")  # the payment lands
    await hub.services.orders.sweep()
    assert (await api.call("GET", f"{O}/{order['id']}", token=admin)).data["status"] == "confirmed"
    assert await stock(api, product["id"]) == 8
