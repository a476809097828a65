"""Coupons and points on an order: priced when the order is placed, taken with the stock,
given back exactly once when the placement fails, or the order is cancelled (by its owner,
an admin, or the payment timeout) or refunded.

Taking follows the stock's pattern (domain/ordering.py): each take is one guarded update
that leaves a marker (`<order>:coupon` in the coupon, `<order>:points` in the points
account) until the order is placed; a failed placement undoes what the markers say; the
sweep undoes or settles markers a dead process left. Giving back after a cancel or refund
is once per order: the coupon by the marker `<order>:unredeem` and the order's
`coupon_released`, the points by the ledger entry `return:<order>`.

Rounding and combining (docs/cart.md): one coupon per order, on the subtotal of the lines it
applies to, rounded down to the cent; points after it, on what is left:
`value = min(left, points × 100 // HUB_POINTS_PER_CURRENCY_UNIT)` minor units, and only the
points that value needs are taken (`ceil(value × per_unit / 100)`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from domain.coupons import check, limit_of, normalize_code, refusal
from domain.errors import Conflict
from domain.events import cloud_event
from domain.money import to_decimal_string
from domain.orders import ABORTED, PLACING

RELEASE_TTL = timedelta(seconds=30)  # a give-back not finished by then is finished by the sweep


class Checkout:
    def __init__(self, coupons, points, order_store, *, source: str, points_per_currency_unit: int,
                 clock: Callable[[], datetime]) -> None:
        self.coupons = coupons  # hub.store.coupons.CouponStore
        self.points = points  # domain.points.Points
        self.orders = order_store
        self.source = source
        self.per_unit = points_per_currency_unit
        self.clock = clock

    # Pricing -----------------------------------------------------------------------------
    def points_value(self, points: int, payable_minor: int) -> tuple[int, int]:
        """(points used, their value in minor units) for up to `points` on `payable_minor`."""
        value = min(payable_minor, points * 100 // self.per_unit)
        return -(-value * self.per_unit // 100), value

    async def quote(self, user_id: str, lines: list[dict], subtotal: int, coupon_code: str | None,
                    points: int) -> dict:
        """What the order costs with the coupon and points; CouponInvalid or
        409 insufficient_points when they cannot apply (nothing is taken here)."""
        code, discount = None, 0
        if coupon_code:
            code = normalize_code(coupon_code)
            discount = check(await self.coupons.get(code), code, user_id, lines, subtotal, self.clock())
        used, value = self.points_value(points, subtotal - discount)
        if used:
            balance = (await self.points.store.account(user_id))["balance"]
            if balance < used:
                raise Conflict("Not enough points.", code="insufficient_points",
                               details={"required": used, "balance": balance})
        return {"subtotal_minor": subtotal, "coupon_code": code, "discount_minor": discount,
                "points_used": used, "points_value_minor": value, "total_minor": subtotal - discount - value}

    # Placing -----------------------------------------------------------------------------
    def _coupon_event(self, kind: str, order: dict, user_id: str | None, **extra) -> dict:
        data = {"code": order.get("coupon_code"), "order_id": order["_id"], "user_id": user_id,
                "discount": to_decimal_string(order.get("discount_minor", 0)), "currency": order.get("currency"), **extra}
        return cloud_event(f"coupon.{kind}", self.source, data, subject=user_id, time=self.clock())

    async def take(self, order: dict) -> None:
        """Redeem the coupon and spend the points of an order being placed (its placing TTL
        bounds the markers). Raises CouponInvalid or Conflict; the caller then undoes."""
        oid, user_id, expires = order["_id"], order["user_id"], order["placing_expires_at"]
        code = order.get("coupon_code")
        if code:
            coupon = await self.coupons.get(code)
            taken = coupon is not None and await self.coupons.take(
                code, user_id, limit=limit_of(coupon), per_user_limit=coupon["per_user_limit"], marker=f"{oid}:coupon",
                expires_at=expires, now=self.clock(), event=self._coupon_event("redeemed", order, user_id), key=oid)
            if not taken:
                raise refusal(await self.coupons.get(code), code, user_id)
        if order.get("points_used"):
            if await self.points.spend_for_order(user_id, oid, order["points_used"], expires) is None:
                balance = (await self.points.store.account(user_id))["balance"]
                raise Conflict("Not enough points.", code="insufficient_points",
                               details={"required": order["points_used"], "balance": balance})

    async def settle(self, order: dict) -> None:
        """The order is placed: its markers are no longer needed."""
        if order.get("coupon_code"):
            await self.coupons.settle(order["coupon_code"], f"{order['_id']}:coupon")
        if order.get("points_used"):
            await self.points.settle_spend(order["user_id"], order["_id"])

    async def undo(self, order_id: str) -> None:
        """A placement that failed or was abandoned: give back what its markers say was taken."""
        order = await self.orders.get(order_id, include_hidden=True)
        if order is None or order["status"] not in (PLACING, ABORTED):
            return
        if order.get("coupon_code"):
            await self.coupons.undo_take(order["coupon_code"], f"{order_id}:coupon", self.clock(),
                                         self._coupon_event("released", order, order["user_id"], reason="order_failed"),
                                         order_id)
        if order.get("points_used"):
            await self.points.return_for_order(order["user_id"], order_id)
            await self.points.settle_spend(order["user_id"], order_id)

    # Cancelled or refunded ---------------------------------------------------------------
    async def give_back(self, order: dict) -> None:
        """The coupon use and the points of a cancelled or refunded order, once."""
        oid = order["_id"]
        if order.get("coupon_code") and not order.get("coupon_released"):
            marker = f"{oid}:unredeem"
            now = self.clock()
            await self.coupons.give_back(
                order["coupon_code"], order["user_id"], marker, now + RELEASE_TTL, now,
                self._coupon_event("released", order, order["user_id"], reason=f"order_{order['status']}"), oid)
            await self.orders.set_fields(oid, {"coupon_released": True})
            await self.coupons.settle(order["coupon_code"], marker)
        if order.get("points_used"):
            await self.points.return_for_order(order["user_id"], oid)
        await self.orders.set_fields(oid, {"release_pending": False})

    # Clean-up (any number of hub processes may run this at once) --------------------------
    async def sweep(self) -> None:
        now = self.clock()
        for code, marker in await self.coupons.expired_holds(now):
            oid, kind = marker.rsplit(":", 1)
            if kind == "unredeem":  # released; record that, then settle
                await self.orders.set_fields(oid, {"coupon_released": True})
                await self.coupons.settle(code, marker)
                continue
            order = await self.orders.get(oid, include_hidden=True)
            if order is None:
                await self.coupons.undo_take(code, marker, now, self._coupon_event(
                    "released", {"_id": oid, "coupon_code": code}, None, reason="order_abandoned"), oid)
            elif order["status"] not in (PLACING, ABORTED):  # placed: keep; else Orders.sweep cleans it up
                await self.coupons.settle(code, marker)
        for user_id, marker in await self.points.store.expired_holds(now):
            oid, kind = marker.rsplit(":", 1)
            if kind != "points":
                continue
            order = await self.orders.get(oid, include_hidden=True)
            if order is None:
                await self.points.return_for_order(user_id, oid)
                await self.points.settle_spend(user_id, oid)
            elif order["status"] not in (PLACING, ABORTED):
                await self.points.settle_spend(user_id, oid)
        for order in await self.orders.release_unfinished(now - RELEASE_TTL):
            await self.give_back(order)
