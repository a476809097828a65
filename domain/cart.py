"""The server-side cart: one per user, following them from device to device.

A cart holds product ids and quantities, a coupon code and the points the user means to
spend; prices, stock and the discount are read live whenever it is shown, and it never
holds stock (stock is taken when the order is placed). Every change is announced as
`cart.updated` on the user's `user` channel, carrying the cart as it now is.

A cart with items becomes due for a reminder HUB_CART_REMINDER_AFTER_S after its last
change (`remind_at`); see `remind`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from domain.coupons import CouponInvalid, check, normalize_code
from domain.errors import Conflict, Invalid
from domain.events import cloud_event
from domain.money import to_decimal_string

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("0c9d6f57-2b1e-4f0a-8d53-6a1f7f2c9e41")
_EMPTY = {"items": [], "coupon_code": None, "points": 0}


class Carts:
    def __init__(self, store, products, order_store, checkout, *, source: str, currency: str, max_items: int,
                 max_quantity: int, remind_after_s: int, cart_url: str, clock: Callable[[], datetime],
                 publish: Callable[[str, dict], Awaitable[None]]) -> None:
        self.store = store
        self.products = products
        self.orders = order_store
        self.checkout = checkout  # domain.checkout.Checkout: coupon checks and points value
        self.source = source
        self.currency = currency
        self.max_items = max_items
        self.max_quantity = max_quantity
        self.remind_after = timedelta(seconds=remind_after_s)
        self.cart_url = cart_url
        self.clock = clock
        self.publish = publish  # (user id, CloudEvent) → the user's `user` channel

    # Reading ---------------------------------------------------------------------------
    async def _load(self, user_id: str) -> dict:
        return await self.store.get(user_id) or {"_id": user_id, **_EMPTY, "version": 0, "updated_at": None}

    async def _lines(self, cart: dict) -> tuple[list[dict], list[dict]]:
        """The cart's items as shown, and as priced (product_id, line_total_minor), at live prices."""
        products = await self.products.get_many([item["product_id"] for item in cart["items"]])
        items, lines = [], []
        for item in cart["items"]:
            product = products.get(item["product_id"])
            if product is None:  # deleted since: no longer offered
                continue
            line_total = product["price_minor"] * item["quantity"]
            items.append({"product_id": item["product_id"], "name": product["name"], "slug": product.get("slug"),
                          "price": to_decimal_string(product["price_minor"]), "quantity": item["quantity"],
                          "available": product["stock"], "line_total": to_decimal_string(line_total)})
            lines.append({"product_id": item["product_id"], "line_total_minor": line_total})
        return items, lines

    async def view(self, user_id: str, cart: dict | None = None) -> dict:
        cart = cart or await self._load(user_id)
        items, lines = await self._lines(cart)
        subtotal = sum(line["line_total_minor"] for line in lines)
        discount, coupon_error = 0, None
        if cart.get("coupon_code"):
            try:
                discount = check(await self.checkout.coupons.get(cart["coupon_code"]), cart["coupon_code"], user_id,
                                 lines, subtotal, self.clock())
            except CouponInvalid as exc:  # kept: it may apply again (a bigger cart, a restock of uses)
                coupon_error = {"reason": exc.reason, "message": exc.message}
        points_used, points_value = 0, 0
        if cart.get("points"):
            balance = (await self.checkout.points.store.account(user_id))["balance"]
            points_used, points_value = self.checkout.points_value(min(cart["points"], balance), subtotal - discount)
        return {
            "items": items, "subtotal": to_decimal_string(subtotal), "coupon_code": cart.get("coupon_code"),
            "coupon_error": coupon_error, "discount": to_decimal_string(discount), "points": cart.get("points", 0),
            "points_used": points_used, "points_value": to_decimal_string(points_value),
            "total": to_decimal_string(subtotal - discount - points_value), "currency": self.currency,
            "updated_at": cart["updated_at"].isoformat() if cart.get("updated_at") else None,
            "version": cart["version"],
        }

    # Changing --------------------------------------------------------------------------
    async def _change(self, user_id: str, mutate: Callable[[dict], dict]) -> dict:
        """Apply `mutate` (cart → changed fields) as a compare-and-set; retried on a
        concurrent change, so no device's change is lost. Announces the result."""
        for _ in range(20):
            cart = await self._load(user_id)
            fields = mutate(cart)
            if not cart["version"]:  # the first change writes the whole cart, not just what it changes
                fields = {**_EMPTY, **fields}
            now = self.clock()
            items = fields.get("items", cart["items"])
            fields.update(updated_at=now, remind_at=now + self.remind_after if items else None)
            if await self.store.replace(user_id, cart["version"], fields):
                cart = {**cart, **fields, "version": cart["version"] + 1}
                view = await self.view(user_id, cart)
                await self._announce(user_id, view)
                return view
        raise Conflict("The cart is being changed elsewhere; try again.", code="cart_busy")

    async def _announce(self, user_id: str, view: dict) -> None:
        event = cloud_event("cart.updated", self.source, {"user_id": user_id, "cart": view}, subject=user_id,
                            event_id=uuid.uuid5(_NAMESPACE, f"{user_id}:{view['version']}").hex, time=self.clock())
        try:
            await self.publish(user_id, event)
        except Exception:  # noqa: BLE001 - the change is stored; other devices see it on their next read
            log.warning("cart.updated not published", exc_info=True, extra={"user_id": user_id})

    async def set_item(self, user_id: str, product_id: str, quantity: int) -> dict:
        if quantity > self.max_quantity:
            raise Invalid(f"At most {self.max_quantity} of one product.", code="validation_failed",
                          details=[{"field": "quantity", "message": f"at most {self.max_quantity}"}])
        if quantity and await self.products.get(product_id) is None:
            raise Invalid("No such product.", code="unknown_product",
                          details=[{"field": "product_id", "product_id": product_id, "message": "no such product"}])

        def mutate(cart: dict) -> dict:
            items = [dict(item) for item in cart["items"]]
            line = next((item for item in items if item["product_id"] == product_id), None)
            if quantity == 0:
                items = [item for item in items if item["product_id"] != product_id]
            elif line is not None:
                line["quantity"] = quantity
            elif len(items) >= self.max_items:
                raise Invalid(f"A cart holds at most {self.max_items} products.", code="cart_full",
                              details={"max_items": self.max_items})
            else:
                items.append({"product_id": product_id, "quantity": quantity})
            return {"items": items}
        return await self._change(user_id, mutate)

    async def set_coupon(self, user_id: str, code: str) -> dict:
        """Only a coupon that applies to the cart as it is now is kept (422 coupon_invalid)."""
        code = normalize_code(code)
        _, lines = await self._lines(await self._load(user_id))
        check(await self.checkout.coupons.get(code), code, user_id, lines,
              sum(line["line_total_minor"] for line in lines), self.clock())
        return await self._change(user_id, lambda c: {"coupon_code": code})

    async def remove_coupon(self, user_id: str) -> dict:
        return await self._change(user_id, lambda c: {"coupon_code": None})

    async def set_points(self, user_id: str, points: int) -> dict:
        return await self._change(user_id, lambda c: {"points": points})

    async def clear(self, user_id: str) -> dict:
        return await self._change(user_id, lambda c: {"items": [], "coupon_code": None, "points": 0})

    # Ordering from the cart --------------------------------------------------------------
    async def for_order(self, user_id: str) -> tuple[list[tuple[str, int]], str | None, int, int]:
        """(items, coupon code, points, version) of the cart to order (no items: the order is
        refused as cart_empty, unless it is the replay of one placed from it). The cart's
        points are a wish, spent up to the balance, as the cart shows them."""
        cart = await self._load(user_id)
        _, lines = await self._lines(cart)  # without products deleted since, as the cart shows it
        ordered = {line["product_id"] for line in lines}
        points = cart.get("points", 0)
        if points:
            points = min(points, (await self.checkout.points.store.account(user_id))["balance"])
        return ([(i["product_id"], i["quantity"]) for i in cart["items"] if i["product_id"] in ordered],
                cart.get("coupon_code"), points, cart["version"])

    async def ordered(self, user_id: str, version: int) -> None:
        """Empty the cart an order was placed from, unless it changed meanwhile (another
        device added something: that stays)."""
        if await self.store.replace(user_id, version, {"items": [], "coupon_code": None, "points": 0,
                                                       "updated_at": self.clock(), "remind_at": None}):
            await self._announce(user_id, await self.view(user_id))

    # Reminders -----------------------------------------------------------------------------
    async def remind(self) -> None:
        """`cart.abandoned` (on the orders topic, through the cart's outbox) for each cart
        untouched since its due time, unless the user ordered since; the notification
        engine makes it a `cart_reminder`. Reads only due carts (index on remind_at);
        clearing the due time and storing the event is one conditional update, so any
        number of processes may run this and each cart is reminded once per change."""
        now = self.clock()
        for cart in await self.store.due_reminders(now):
            user_id = cart["_id"]
            event = None
            if cart["items"] and not await self.orders.placed_since(user_id, cart["updated_at"]):
                view = await self.view(user_id, cart)
                event = cloud_event("cart.abandoned", self.source, {
                    "user_id": user_id, "cart_url": self.cart_url, "items": view["items"][:20],
                    "item_count": sum(i["quantity"] for i in view["items"]), "subtotal": view["subtotal"],
                    "currency": self.currency, "updated_at": view["updated_at"]}, subject=user_id, time=now)
            await self.store.finish_reminder(user_id, cart["version"], event)
