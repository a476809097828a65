"""A user's very first cart change, whatever it is, leaves a whole cart behind: setting
points, removing a coupon or an item, or emptying a cart that does not exist yet used to
store a cart without its items, and every later read of it answered 500 (found by
tests/test_fuzz_openapi.py)."""

from __future__ import annotations

import pytest

from tests.checkout_helpers import CART

pytestmark = [pytest.mark.timeout(120)]

FIRST_CHANGES = [("PUT", f"{CART}/points", {"points": 5}), ("DELETE", f"{CART}/coupon", None),
                 ("DELETE", CART, None), ("PUT", f"{CART}/items/no-such-product", {"quantity": 0})]


async def test_any_first_change_leaves_a_cart_that_reads_and_changes(api):
    admin = await api.admin_token()
    product = await api.product(admin, price="2.50", stock=10)
    for method, path, body in FIRST_CHANGES:
        token = (await api.register())["access_token"]
        first = await api.call(method, path, body, token=token)
        assert first.status == 200 and first.data["items"] == [], (method, path, first)
        for _ in range(2):  # read, and read again after a second change
            r = await api.call("GET", CART, token=token)
            assert r.status == 200 and r.data["coupon_code"] is None, (method, path, r)
            expected_points = 5 if path.endswith("/points") else 0
            assert r.data["points"] == expected_points, (method, path, r.data)
            if r.data["items"]:
                assert [(i["product_id"], i["quantity"]) for i in r.data["items"]] == [(product["id"], 2)]
                break
            r = await api.call("PUT", f"{CART}/items/{product['id']}", {"quantity": 2}, token=token)
            assert r.status == 200 and r.data["subtotal"] == "5.00", (method, path, r)
        else:
            raise AssertionError(f"the item was not kept after {method} {path}")
        # A coupon that does not exist is refused with its reason, the cart unchanged.
        r = await api.call("PUT", f"{CART}/coupon", {"code": "NOSUCH"}, token=token)
        assert r.status == 422 and r.data["error"]["code"] == "coupon_invalid", r
        assert (await api.call("GET", CART, token=token)).data["items"][0]["quantity"] == 2
