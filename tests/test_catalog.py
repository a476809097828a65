"""Catalog and stock over real HTTP against an in-process hub (CONTRACT §2 "Catalog and stock").

Every hub start costs a few seconds (the bundled broker delays the first consumer-group
join), so related cases share one hub and loop over a table, naming the case on failure."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.stores]

P = "/api/v1/products"


def fields_named(response) -> set[str]:
    """The field names an error's details point at (last part of a dotted path)."""
    details = response.data["error"]["details"] or []
    return {str(d.get("field", "")).split(".")[-1] for d in details if isinstance(d, dict)}


def same(a: dict, b: dict) -> bool:
    """Equal but for the timestamps (the create response carries microseconds that storage rounds to ms)."""
    return {k: v for k, v in a.items() if not k.endswith("_at")} == {k: v for k, v in b.items() if not k.endswith("_at")}


async def names(api, query: str = "") -> tuple[list[str], int]:
    r = await api.call("GET", f"{P}?{query}")
    assert r.status == 200, (query, r)
    return [p["name"] for p in r.data["items"]], r.data["total"]


# Create, read, change, delete --------------------------------------------------------

async def test_admin_creates_reads_patches_and_deletes_a_product(api):
    admin = await api.admin_token()
    r = await api.call("POST", P, {"name": "Blue Mug", "price": "12.50", "stock": 5, "category": "kitchen",
                                   "description": "Ceramic", "points_price": 300}, token=admin)
    assert r.status == 201, r
    mug = r.data
    assert isinstance(mug["id"], str) and mug["id"]
    assert {k: mug[k] for k in ("name", "slug", "price", "currency", "stock", "category", "description",
                                "low_stock_threshold", "points_price")} == {
        "name": "Blue Mug", "slug": "blue-mug", "price": "12.50", "currency": "USD", "stock": 5,
        "category": "kitchen", "description": "Ceramic", "low_stock_threshold": 10, "points_price": 300}

    # A namesake gets its own, different slug; an explicit threshold is kept.
    twin = await api.call("POST", P, {"name": "Blue Mug", "price": 3, "stock": 0, "low_stock_threshold": 2}, token=admin)
    assert twin.status == 201, twin
    assert twin.data["slug"] != "blue-mug" and twin.data["slug"].startswith("blue-mug")
    assert twin.data["id"] != mug["id"] and twin.data["low_stock_threshold"] == 2
    assert twin.data["points_price"] is None and twin.data["category"] is None

    for key in (mug["id"], "blue-mug"):
        got = await api.call("GET", f"{P}/{key}")
        assert got.status == 200 and same(got.data, mug), (key, got)
    by_twin_slug = await api.call("GET", f"{P}/{twin.data['slug']}")
    assert by_twin_slug.status == 200 and by_twin_slug.data["id"] == twin.data["id"]

    # PATCH changes what it names and nothing else; stock is not a PATCH field.
    patched = await api.call("PATCH", f"{P}/{mug['id']}", {"price": "13", "name": "Big Blue Mug", "stock": 999},
                             token=admin)
    assert patched.status == 200, patched
    assert (patched.data["name"], patched.data["price"], patched.data["stock"]) == ("Big Blue Mug", "13.00", 5)
    assert patched.data["category"] == "kitchen" and patched.data["points_price"] == 300
    assert (await api.call("GET", f"{P}/{mug['id']}")).data == patched.data
    for bad in ({"price": "1.234"}, {"name": None}, {"name": ""}, {"low_stock_threshold": -1}):
        r = await api.call("PATCH", f"{P}/{mug['id']}", bad, token=admin)
        assert r.status == 422 and r.error_code == "validation_failed", (bad, r)
        assert fields_named(r) == set(bad), (bad, r)
    assert (await api.call("GET", f"{P}/{mug['id']}")).data == patched.data

    deleted = await api.call("DELETE", f"{P}/{mug['id']}", token=admin)
    assert deleted.status == 204 and not deleted.data
    for key in (mug["id"], "blue-mug"):
        gone = await api.call("GET", f"{P}/{key}")
        assert gone.status == 404 and gone.error_code == "product_not_found", (key, gone)
    assert await names(api) == (["Blue Mug"], 1)  # only the twin is listed
    assert (await api.call("DELETE", f"{P}/{mug['id']}", token=admin)).status == 404
    assert (await api.call("PATCH", f"{P}/{mug['id']}", {"price": "1.00"}, token=admin)).status == 404


# Money ---------------------------------------------------------------------------------

async def test_prices_are_exact_and_stored_as_integer_minor_units(api, hub_server):
    admin = await api.admin_token()
    cases = [("12.5", "12.50", 1250), (12.5, "12.50", 1250), (12, "12.00", 1200), ("0.10", "0.10", 10),
             (19.99, "19.99", 1999), (0.29, "0.29", 29), ("1.10", "1.10", 110), (0, "0.00", 0)]
    for sent, shown, minor in cases:
        r = await api.call("POST", P, {"name": f"Priced {sent!r}", "price": sent, "stock": 1}, token=admin)
        assert r.status == 201 and r.data["price"] == shown, (sent, r)
        assert (await api.call("GET", f"{P}/{r.data['id']}")).data["price"] == shown
        stored = await hub_server.hub.db["products"].find_one({"_id": r.data["id"]})
        assert type(stored["price_minor"]) is int and stored["price_minor"] == minor, (sent, stored)
        assert "price" not in stored or not isinstance(stored["price"], float), stored
    # A PATCHed price is stored the same way.
    await api.call("PATCH", f"{P}/{r.data['id']}", {"price": 7.1}, token=admin)
    stored = await hub_server.hub.db["products"].find_one({"_id": r.data["id"]})
    assert type(stored["price_minor"]) is int and stored["price_minor"] == 710


async def test_bad_price_or_stock_is_422_naming_the_field_and_creates_nothing(api):
    admin = await api.admin_token()
    cases = [("price", v) for v in ("12.345", -1, "-0.01", "abc", "", "NaN", "Infinity", True, None, [], {})] + \
            [("stock", v) for v in ("5", 5.5, -1, True, None, [])]
    for field, value in cases:
        body = {"name": "Bad", "price": "1.00", "stock": 1, field: value}
        r = await api.call("POST", P, body, token=admin)
        assert r.status == 422 and r.error_code == "validation_failed", (field, value, r)
        assert fields_named(r) == {field}, (field, value, r)
        assert set(r.data["error"]) == {"code", "message", "details"} and r.data["error"]["message"]
    for missing in ("name", "price", "stock"):
        body = {"name": "Bad", "price": "1.00", "stock": 1}
        del body[missing]
        r = await api.call("POST", P, body, token=admin)
        assert r.status == 422 and fields_named(r) == {missing}, (missing, r)
    malformed = await api.call("POST", P, body=b'{"name": "Bad",', token=admin)
    assert malformed.status == 400 and malformed.error_code == "malformed_json", malformed
    assert await names(api) == ([], 0)


# Who may change the catalog --------------------------------------------------------------

async def test_customers_and_anonymous_callers_cannot_change_the_catalog(api):
    admin = await api.admin_token()
    customer = (await api.register())["access_token"]
    product = await api.product(admin, name="Guarded", price="5.00", stock=4)
    pid = product["id"]
    attempts = [
        ("POST", P, {"name": "Sneaky", "price": "1.00", "stock": 1}),
        ("PATCH", f"{P}/{pid}", {"price": "0.01"}),
        ("DELETE", f"{P}/{pid}", None),
        ("POST", f"{P}/{pid}/stock", {"delta": 100}),
        ("POST", f"{P}/{pid}/stock", {"set": 0}),
    ]
    for token, status in ((customer, 403), (None, 401), ("not-a-jwt", 401)):
        for method, path, body in attempts:
            r = await api.call(method, path, body, token=token)
            assert r.status == status and r.error_code, (token, method, path, r)
    assert same((await api.call("GET", f"{P}/{pid}")).data, product)
    assert await names(api) == (["Guarded"], 1)


# Listing ---------------------------------------------------------------------------------

CATALOG = [  # name, price, stock, category, description; created in this order
    ("Blue Mug", "12.50", 5, "kitchen", "Ceramic"),
    ("Red Kettle", "30.00", 0, "kitchen", "Steel"),
    ("Garden Hose", "19.99", 20, "garden", "green with BLUE stripes"),
    ("Plant Pot", "5.00", 1, "garden", "terracotta"),
    ("Notebook", "3.20", 7, "Blue Office", None),
]

LIST_CASES = [  # query, expected names (in order when sorted, else as a set)
    ("q=BLUE", {"Blue Mug", "Garden Hose", "Notebook"}),  # name, description, category
    ("q=kettle", {"Red Kettle"}),
    ("q=.*", set()),  # literal text, not a pattern
    ("q=(", set()),
    ("category=kitchen", {"Blue Mug", "Red Kettle"}),
    ("category=Kitchen", set()),
    ("min_price=10&max_price=20", {"Blue Mug", "Garden Hose"}),
    ("min_price=12.50&max_price=12.5", {"Blue Mug"}),  # bounds are inclusive
    ("min_price=19.99", {"Garden Hose", "Red Kettle"}),
    ("max_price=5", {"Plant Pot", "Notebook"}),
    ("in_stock=true", {"Blue Mug", "Garden Hose", "Plant Pot", "Notebook"}),
    ("in_stock=false", {"Red Kettle"}),
    ("q=blue&in_stock=true&max_price=15", {"Blue Mug", "Notebook"}),
    ("sort=price", ["Notebook", "Plant Pot", "Blue Mug", "Garden Hose", "Red Kettle"]),
    ("sort=-price", ["Red Kettle", "Garden Hose", "Blue Mug", "Plant Pot", "Notebook"]),
    ("sort=name", ["Blue Mug", "Garden Hose", "Notebook", "Plant Pot", "Red Kettle"]),
    ("sort=newest", ["Notebook", "Plant Pot", "Garden Hose", "Red Kettle", "Blue Mug"]),
    ("", ["Notebook", "Plant Pot", "Garden Hose", "Red Kettle", "Blue Mug"]),  # newest by default
    ("category=garden&sort=-price", ["Garden Hose", "Plant Pot"]),
]


async def test_list_filters_sorts_and_counts_the_filtered_set(api):
    admin = await api.admin_token()
    for name, price, stock, category, description in CATALOG:
        await api.product(admin, name=name, price=price, stock=stock, category=category, description=description)
    for query, expected in LIST_CASES:
        got, total = await names(api, query)
        if isinstance(expected, list):
            assert got == expected, query
        else:
            assert set(got) == expected and len(got) == len(expected), query
        assert total == len(expected), query

    r = await api.call("GET", f"{P}?sort=name&page=2&limit=2")
    assert (r.data["page"], r.data["limit"], r.data["total"]) == (2, 2, 5)
    assert [p["name"] for p in r.data["items"]] == ["Notebook", "Plant Pot"]
    assert await names(api, "sort=name&page=3&limit=2") == (["Red Kettle"], 5)
    assert await names(api, "sort=name&page=4&limit=2") == ([], 5)
    assert await names(api, "in_stock=true&sort=price&limit=1") == (["Notebook"], 4)  # total is not the page size
    # Search follows a PATCH of the searched fields.
    pot = (await api.call("GET", f"{P}?q=plant+pot")).data["items"][0]
    await api.call("PATCH", f"{P}/{pot['id']}", {"description": "With a Drainage hole", "category": "patio"}, token=admin)
    assert await names(api, "q=drainage") == (["Plant Pot"], 1)
    assert await names(api, "q=PATIO") == (["Plant Pot"], 1)
    assert await names(api, "q=terracotta") == ([], 0)
    assert await names(api, "category=garden") == (["Garden Hose"], 1)
    default = await api.call("GET", P)
    assert (default.data["page"], default.data["limit"]) == (1, 20)
    assert {"id", "name", "slug", "price", "currency", "stock", "category", "low_stock_threshold",
            "points_price"} <= default.data["items"][0].keys()


async def test_bad_list_parameters_are_422_naming_the_parameter(api):
    for query, field in [("page=0", "page"), ("page=abc", "page"), ("limit=1000", "limit"), ("limit=0", "limit"),
                         ("sort=bogus", "sort"), ("min_price=abc", "min_price"), ("max_price=-1", "max_price"),
                         ("min_price=1.001", "min_price"), ("in_stock=maybe", "in_stock")]:
        r = await api.call("GET", f"{P}?{query}")
        assert r.status == 422 and r.error_code == "validation_failed", (query, r)
        assert fields_named(r) == {field}, (query, r)


# Stock -----------------------------------------------------------------------------------

async def test_stock_delta_and_set(api):
    admin = await api.admin_token()
    pid = (await api.product(admin, stock=10))["id"]
    steps = [  # body, status, stock afterwards
        ({"delta": 5}, 200, 15),
        ({"delta": -3}, 200, 12),
        ({"set": 7}, 200, 7),
        ({"delta": -8}, 409, 7),  # would go below zero: refused, unchanged
        ({"delta": -7}, 200, 0),
        ({"delta": -1}, 409, 0),
        ({"set": 3}, 200, 3),
        ({"delta": 1, "set": 2}, 422, 3),
        ({}, 422, 3),
        ({"delta": None, "set": None}, 422, 3),
        ({"set": -1}, 422, 3),
        ({"delta": "5"}, 422, 3),
        ({"delta": 2.5}, 422, 3),
        ({"set": True}, 422, 3),
    ]
    for body, status, stock in steps:
        r = await api.call("POST", f"{P}/{pid}/stock", body, token=admin)
        assert r.status == status, (body, r)
        if status == 200:
            assert r.data["id"] == pid and r.data["stock"] == stock, (body, r)
        else:
            assert r.error_code, (body, r)
        assert (await api.call("GET", f"{P}/{pid}")).data["stock"] == stock, body


async def test_unknown_or_deleted_product_is_404_everywhere(api):
    admin = await api.admin_token()
    deleted = (await api.product(admin))["id"]
    assert (await api.call("DELETE", f"{P}/{deleted}", token=admin)).status == 204
    for pid in ("no-such-product", "0123456789abcdef0123456789abcdef", deleted):
        for method, path, body in [("GET", f"{P}/{pid}", None), ("PATCH", f"{P}/{pid}", {"price": "1.00"}),
                                   ("PATCH", f"{P}/{pid}", {}), ("DELETE", f"{P}/{pid}", None),
                                   ("POST", f"{P}/{pid}/stock", {"delta": 1}), ("POST", f"{P}/{pid}/stock", {"set": 1})]:
            r = await api.call(method, path, body, token=admin)
            assert r.status == 404 and r.error_code == "product_not_found", (method, path, body, r)


async def test_search_does_not_match_across_fields(api):
    admin = await api.admin_token()
    await api.product(admin, name="Blue Mug", description="Ceramic", category="kitchen")
    assert await names(api, "q=mug+ceramic") == ([], 0)
    assert await names(api, "q=ceramic+kitchen") == ([], 0)
