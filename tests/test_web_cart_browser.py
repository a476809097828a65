"""The web app's cart, coupons and points (docs/cart.md, docs/web.md) in headless Chromium:
a signed-out visitor's cart merges into the account's on sign-in; the same user's laptop
follows a change made on the phone live; a coupon and points show in the totals and the order
is placed from the hub's cart; the admin creates, lists and deactivates coupons.

Fixtures and helpers are those of tests/test_web_browser.py (Chromium from the distribution)."""

from __future__ import annotations

import re
import uuid

from tests.checkout_helpers import CART, give_points
from tests.test_web_browser import (ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, browser, expect, extra_env,  # noqa: F401
                                    hub_env, live, people, product_card, pytestmark, push, shot, sign_in, sink,
                                    twilio)


async def test_the_cart_follows_the_user_with_coupon_and_points(hub_server, api, people):
    admin_token = await api.admin_token()
    code = f"WEB{uuid.uuid4().hex[:6]}".upper()
    r = await api.call("POST", "/api/v1/coupons", {"code": code, "kind": "percent", "value": "10", "max_redemptions": 5},
                       token=admin_token)
    assert r.status == 201, r
    email = f"cart-{uuid.uuid4().hex[:8]}@example.com"
    session = await api.register(email=email, password=PASSWORD)
    await give_points(api, session["user"]["id"], session["access_token"], 500)

    # Signed out on the phone: the cart lives in the browser.
    phone = await people.open("phone", phone=True)
    await phone.goto("/")
    await product_card(phone, "Stoneware mug").get_by_label("Quantity").fill("2")
    await product_card(phone, "Stoneware mug").get_by_role("button", name="Add to cart").click()
    await expect(phone.locator("#cart-count")).to_have_text("2")
    assert (await api.call("GET", CART, token=session["access_token"])).data["items"] == []

    # Signing in merges it into the account's cart.
    await sign_in(phone, email, PASSWORD)
    await expect(phone.locator("#cart-count")).to_have_text("2")
    async def server_cart():
        return (await api.call("GET", CART, token=session["access_token"])).data
    assert [(i["name"], i["quantity"]) for i in (await server_cart())["items"]] == [("Stoneware mug", 2)]
    assert await phone.evaluate("() => localStorage.getItem('hub.cart')") is None

    # The laptop, signed in as the same user, shows the cart and follows the phone live.
    laptop = await people.open("laptop")
    await sign_in(laptop, email, PASSWORD)
    await laptop.goto("/#/cart")
    await live(laptop)
    await expect(laptop.locator("tr[data-product-id]")).to_have_count(1)
    await phone.goto("/")
    await product_card(phone, "Canvas tote bag").get_by_role("button", name="Add to cart").click()
    await expect(laptop.locator("tr[data-product-id]")).to_have_count(2)
    await expect(laptop.locator("#cart-count")).to_have_text("3")

    # A coupon that does not exist is explained; a real one shows in the totals; points too.
    people.allow(422)
    await laptop.get_by_label("Coupon code").fill("NOPE")
    await laptop.get_by_role("button", name="Apply coupon").click()
    await expect(laptop.get_by_role("alert")).to_contain_text("There is no such coupon.")
    await laptop.get_by_label("Coupon code").fill(code.lower())
    await laptop.get_by_role("button", name="Apply coupon").click()
    await expect(laptop.locator("tfoot")).to_contain_text(f"Coupon {code}")
    await laptop.get_by_label("Points to spend").fill("300")
    await laptop.get_by_role("button", name="Use points").click()
    await expect(laptop.locator("tfoot")).to_contain_text("300 points")
    # 2 × 14.00 + 19.00 = 47.00; 10 % off → 42.30; 300 points → 39.30.
    await expect(laptop.locator("tfoot .total")).to_have_text("$39.30")
    await shot(laptop, "cart-coupon-points")

    # Checkout places the hub's cart; both devices' carts are empty afterwards.
    await laptop.get_by_label("Shipping address").fill("2 Dock Road, Cork")
    await laptop.get_by_role("button", name="Place order").click()
    await expect(laptop).to_have_url(re.compile(r"#/orders/[0-9a-f]{32}$"))
    order_id = laptop.url.rsplit("/", 1)[1]
    order = (await api.call("GET", f"/api/v1/orders/{order_id}", token=session["access_token"])).data
    assert (order["subtotal"], order["discount"], order["points_used"], order["total"], order["coupon_code"]) == \
        ("47.00", "4.70", 300, "39.30", code)
    await expect(laptop.locator("#cart-count")).to_have_text("0")
    await expect(phone.locator("#cart-count")).to_have_text("0")
    assert (await server_cart())["items"] == []


async def test_the_admin_creates_lists_and_deactivates_coupons(hub_server, api, people):
    admin = await people.open("admin")
    await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    await admin.get_by_role("link", name="Coupons").click()
    await expect(admin.get_by_role("heading", name="Admin: coupons")).to_be_visible()
    people.allow(422)
    await admin.get_by_label("Code").fill("SPRING")
    await admin.get_by_label("Value").fill("150")
    await admin.get_by_role("button", name="Create coupon").click()
    await expect(admin.get_by_role("alert")).to_contain_text("The coupon was not created.")
    await admin.get_by_label("Value").fill("15")
    await admin.get_by_label("Redemptions in all").fill("5")
    await admin.get_by_role("button", name="Create coupon").click()
    row = admin.locator('tr[data-code="SPRING"]')
    await expect(row.locator(".redemptions")).to_have_text("0 / 5")

    # A customer uses it; the admin sees the count after a reload; then deactivates it.
    customer = await api.register()
    mug = (await api.call("GET", "/api/v1/products?q=mug")).data["items"][0]
    r = await api.call("POST", "/api/v1/orders", {"items": [{"product_id": mug["id"], "quantity": 1}],
                                                  "coupon_code": "spring"}, token=customer["access_token"])
    assert r.status == 201 and r.data["discount"] == "2.10", r
    await admin.reload()
    await expect(row.locator(".redemptions")).to_have_text("1 / 5")
    await row.get_by_role("button", name=re.compile("^Deactivate")).click()
    await expect(row).to_contain_text("deactivated")
    await shot(admin, "admin-coupons")
    assert (await api.call("GET", "/api/v1/coupons/SPRING", token=await api.admin_token())).data["active"] is False
