"""Reminders over real HTTP and Kafka (CONTRACT v2 §5): a cart left untouched gets one
`cart_reminder` (after HUB_CART_REMINDER_AFTER_S, here 1 s of the carts' clock, which the
test moves, so a slow machine cannot make a cart due early), announced as `cart.abandoned`
on the orders topic, as an ordinary marketing notification (a user who turned marketing off
gets it suppressed), and none once an order was placed; a coupon a user has used and may
use again gets one `coupon_expiring` when it ends within a day. The sweeps are run by the
tests, several at once, as several hub processes would."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.checkout_helpers import CART, coupon, kafka_events, of_type, order

pytestmark = [pytest.mark.timeout(120), pytest.mark.stores]
INBOX = "/api/v1/users/me/notifications"
NOT_MARKETING = ["order", "payment", "points", "stock"]


@pytest.fixture
def hub_env(hub_env):
    hub_env.update({"HUB_SWEEP_INTERVAL_S": "3600", "HUB_CART_REMINDER_AFTER_S": "1",
                    "HUB_PUBLIC_URL": "https://shop.example"})
    return hub_env


async def inbox(api, token: str, notification_type: str, *, expect: int, timeout: float = 10.0) -> list[dict]:
    """The caller's notifications of a type, once there are `expect` of them (or the timeout);
    waits a little longer to see that no more arrive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await api.call("GET", INBOX, token=token)
        assert r.status == 200, r
        found = [n for n in r.data["items"] if n["type"] == notification_type]
        if len(found) >= expect or loop.time() >= deadline:
            if expect == 0 or len(found) > expect:
                return found
            await asyncio.sleep(0.5)
            r = await api.call("GET", INBOX, token=token)
            return [n for n in r.data["items"] if n["type"] == notification_type]
        await asyncio.sleep(0.1)


async def shopper(api, admin, product_id: str, quantity: int = 2):
    session = await api.register()
    token = session["access_token"]
    r = await api.call("PUT", f"{CART}/items/{product_id}", {"quantity": quantity}, token=token)
    assert r.status == 200, r
    return token, session["user"]["id"]


class Clock:
    """The carts' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def sweep_as_three_processes(sweep) -> None:
    await asyncio.gather(sweep(), sweep(), sweep())


async def test_an_untouched_cart_gets_one_reminder_unless_an_order_came_or_marketing_is_off(api, hub_server):
    hub = hub_server.hub
    hub.services.carts.clock = clock = Clock()
    admin = await api.admin_token()
    product = await api.product(admin, name="Blue Kettle", price="12.50", stock=100)
    left, left_id = await shopper(api, admin, product["id"])
    ordered, ordered_id = await shopper(api, admin, product["id"])
    from_cart, from_cart_id = await shopper(api, admin, product["id"])
    quiet, quiet_id = await shopper(api, admin, product["id"])
    prefs = {"channels": {c: {"enabled": True, "types": NOT_MARKETING} for c in ("email", "push", "websocket")}}
    assert (await api.call("PUT", "/api/v1/users/me/preferences", prefs, token=quiet)).status == 200
    assert (await order(api, ordered, (product["id"], 1))).status == 201  # an order after the cart's last change
    assert (await order(api, from_cart, from_cart=True)).status == 201  # empties the cart

    await sweep_as_three_processes(hub.services.carts.remind)  # not due yet: nothing
    assert not of_type(await kafka_events(hub, "orders", timeout=1), "cart.abandoned")
    clock.advance(1.2)
    for _ in range(2):
        await sweep_as_three_processes(hub.services.carts.remind)

    events = await kafka_events(hub, "orders", until=lambda es: len(of_type(es, "cart.abandoned")) >= 2)
    abandoned = of_type(events, "cart.abandoned")
    assert sorted(e["subject"] for e in abandoned) == sorted([left_id, quiet_id]), abandoned
    mine = next(e for e in abandoned if e["subject"] == left_id)
    assert (mine["data"]["item_count"], mine["data"]["subtotal"]) == (2, "25.00")
    assert mine["data"]["cart_url"] == "https://shop.example/#/cart"

    [reminder] = await inbox(api, left, "cart_reminder", expect=1)
    assert reminder["category"] == "marketing" and "https://shop.example/#/cart" in reminder["body"], reminder
    assert "25.00" in reminder["body"]
    [suppressed] = await inbox(api, quiet, "cart_reminder", expect=1)
    assert {d["status"] for d in suppressed["deliveries"]} == {"suppressed"}, suppressed
    assert "preference" in {d["reason"] for d in suppressed["deliveries"]}, suppressed
    assert await inbox(api, ordered, "cart_reminder", expect=0, timeout=1) == []
    assert await inbox(api, from_cart, "cart_reminder", expect=0, timeout=1) == []

    # A change re-arms the reminder: one more after the next quiet period, not before.
    assert (await api.call("PUT", f"{CART}/items/{product['id']}", {"quantity": 5}, token=left)).status == 200
    await sweep_as_three_processes(hub.services.carts.remind)
    assert len(await inbox(api, left, "cart_reminder", expect=1, timeout=1)) == 1
    clock.advance(1.2)
    await sweep_as_three_processes(hub.services.carts.remind)
    assert len(await inbox(api, left, "cart_reminder", expect=2)) == 2


async def test_a_coupon_ending_within_a_day_reminds_those_who_used_it_and_may_again(api, hub_server):
    hub = hub_server.hub
    admin = await api.admin_token()
    product = await api.product(admin, price="10.00", stock=100)
    ends = datetime.now(timezone.utc) + timedelta(hours=3)
    c = await coupon(api, admin, code=f"E{uuid.uuid4().hex[:8]}", kind="amount", value="1", per_user_limit=2,
                     ends_at=ends.isoformat())
    later = await coupon(api, admin, code=f"L{uuid.uuid4().hex[:8]}", kind="amount", value="1", per_user_limit=2,
                         ends_at=(ends + timedelta(days=3)).isoformat())
    once = (await api.register())["access_token"]
    twice = (await api.register())["access_token"]
    never = (await api.register())["access_token"]
    for token, code, times in ((once, c["code"], 1), (twice, c["code"], 2), (once, later["code"], 1)):
        for _ in range(times):
            assert (await order(api, token, (product["id"], 1), coupon_code=code)).status == 201

    for _ in range(2):
        await sweep_as_three_processes(hub.services.coupons.remind_expiring)
    [notice] = await inbox(api, once, "coupon_expiring", expect=1)
    assert c["code"] in notice["title"] and "https://shop.example/#/cart" in notice["body"], notice
    assert notice["category"] == "marketing" and notice["data"]["code"] == c["code"]
    assert await inbox(api, twice, "coupon_expiring", expect=0, timeout=1) == []  # no use left
    assert await inbox(api, never, "coupon_expiring", expect=0, timeout=1) == []
