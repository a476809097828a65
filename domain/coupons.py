"""Coupons: what one takes off an order, when it may be used, and the admin's view of it.

Money is integer minor units throughout. The rules (docs/cart.md):
- a coupon applies to the lines of its `product_ids` (all lines when it names none);
- `percent`: the value is a percentage with up to two decimals, stored in basis points
  (12.5 % → 1250); the discount is `eligible × bp // 10000`, rounded down to the cent;
- `amount`: the value in minor units, at most the eligible lines' total;
- `max_discount` caps either kind; `min_subtotal` is compared with the whole subtotal
  before any discount;
- one coupon per order; points are spent after it, on what is left.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from domain.errors import Conflict, Invalid, NotFound
from domain.events import cloud_event
from domain.money import to_decimal_string

# A coupon document keeps one redemption counter per user, so it needs an upper bound even
# when the admin sets none: 100,000 counters stay far below MongoDB's 16 MiB per document.
MAX_REDEMPTIONS = 100_000
MAX_PER_USER = 1000
MAX_PRODUCTS = 100
EXPIRING_NOTICE = timedelta(hours=24)  # coupon_expiring goes this long before ends_at
NOTICE_LEASE = timedelta(minutes=5)  # a process sending expiry notices that dies is relieved after this
_NAMESPACE = uuid.UUID("a3f4c2d1-7e6b-4c5a-9f8e-1d2c3b4a5e6f")

REASONS = ("unknown", "not_started", "expired", "min_subtotal", "exhausted", "per_user_limit", "not_applicable")


class CouponInvalid(Invalid):
    code = "coupon_invalid"

    def __init__(self, reason: str, code: str, message: str, **extra) -> None:
        super().__init__(message, details={"reason": reason, "code": code, **extra})
        self.reason = reason


def normalize_code(code: str) -> str:
    """Codes are compared without regard to case (the shop prints SUMMER10, users type summer10)."""
    return code.strip().upper()


def eligible_minor(coupon: dict, lines: list[dict]) -> int:
    """The total of the lines the coupon applies to (lines: product_id, line_total_minor)."""
    products = coupon.get("product_ids") or None
    return sum(line["line_total_minor"] for line in lines if products is None or line["product_id"] in products)


def discount_minor(coupon: dict, lines: list[dict]) -> int:
    eligible = eligible_minor(coupon, lines)
    if coupon["kind"] == "percent":
        discount = eligible * coupon["value"] // 10_000
    else:
        discount = min(coupon["value"], eligible)
    if coupon.get("max_discount_minor") is not None:
        discount = min(discount, coupon["max_discount_minor"])
    return discount


def limit_of(coupon: dict) -> int:
    return coupon.get("max_redemptions") or MAX_REDEMPTIONS


def check(coupon: dict | None, code: str, user_id: str, lines: list[dict], subtotal: int, now: datetime) -> int:
    """The discount `coupon` gives this user on these lines now, or CouponInvalid naming why not.
    Counts are as last read: the redemption itself is guarded again when it is taken."""
    if coupon is None:
        raise CouponInvalid("unknown", code, "There is no such coupon.")
    if not coupon["active"]:
        raise CouponInvalid("expired", code, "This coupon has been withdrawn.")
    if coupon.get("starts_at") and now < coupon["starts_at"]:
        raise CouponInvalid("not_started", code, "This coupon is not valid yet.",
                            starts_at=coupon["starts_at"].isoformat())
    if coupon.get("ends_at") and now >= coupon["ends_at"]:
        raise CouponInvalid("expired", code, "This coupon has expired.", ends_at=coupon["ends_at"].isoformat())
    if subtotal < coupon.get("min_subtotal_minor", 0):
        raise CouponInvalid("min_subtotal", code, "The order is below this coupon's minimum.",
                            min_subtotal=to_decimal_string(coupon["min_subtotal_minor"]))
    if coupon["redeemed"] >= limit_of(coupon):
        raise CouponInvalid("exhausted", code, "This coupon has been used up.")
    if coupon.get("users", {}).get(user_id, 0) >= coupon["per_user_limit"]:
        raise CouponInvalid("per_user_limit", code, "You have already used this coupon as often as allowed.",
                            per_user_limit=coupon["per_user_limit"])
    if eligible_minor(coupon, lines) == 0:
        raise CouponInvalid("not_applicable", code, "This coupon applies to none of these products.")
    return discount_minor(coupon, lines)


def refusal(coupon: dict | None, code: str, user_id: str) -> CouponInvalid:
    """Why a guarded redemption was refused, judged from the coupon as it is now."""
    if coupon is None:
        return CouponInvalid("unknown", code, "There is no such coupon.")
    if not coupon["active"]:
        return CouponInvalid("expired", code, "This coupon has been withdrawn.")
    if coupon.get("users", {}).get(user_id, 0) >= coupon["per_user_limit"]:
        return CouponInvalid("per_user_limit", code, "You have already used this coupon as often as allowed.",
                             per_user_limit=coupon["per_user_limit"])
    return CouponInvalid("exhausted", code, "This coupon has been used up.")


def new_coupon(fields: dict, now: datetime) -> dict:
    """A coupon document from validated admin input (money already in minor units)."""
    code = normalize_code(fields["code"])
    if fields["kind"] == "percent" and not 0 < fields["value"] <= 10_000:
        raise Invalid("A percent coupon's value is more than 0 and at most 100.",
                      details=[{"field": "value", "message": "more than 0 and at most 100 for percent"}])
    if fields["kind"] == "amount" and fields["value"] <= 0:
        raise Invalid("An amount coupon's value must be more than 0.",
                      details=[{"field": "value", "message": "more than 0"}])
    starts, ends = fields.get("starts_at"), fields.get("ends_at")
    if starts and ends and ends <= starts:
        raise Invalid("ends_at must be after starts_at.", details=[{"field": "ends_at", "message": "after starts_at"}])
    return {
        "_id": code, "code": code, "kind": fields["kind"], "value": fields["value"],
        "max_discount_minor": fields.get("max_discount"), "min_subtotal_minor": fields.get("min_subtotal") or 0,
        "max_redemptions": fields.get("max_redemptions"), "per_user_limit": fields.get("per_user_limit") or 1,
        "starts_at": starts, "ends_at": ends, "product_ids": sorted(set(fields.get("product_ids") or [])),
        "active": True, "redeemed": 0, "users": {}, "holds": [], "outbox": [],
        "expiring_notice_at": ends - EXPIRING_NOTICE if ends else None,
        "created_at": now, "updated_at": now,
    }


def public_coupon(doc: dict) -> dict:
    return {
        "code": doc["code"], "kind": doc["kind"],
        "value": to_decimal_string(doc["value"]),  # a percentage for percent, an amount for amount
        "max_discount": to_decimal_string(doc["max_discount_minor"]) if doc.get("max_discount_minor") is not None else None,
        "min_subtotal": to_decimal_string(doc.get("min_subtotal_minor", 0)),
        "max_redemptions": doc.get("max_redemptions"), "per_user_limit": doc["per_user_limit"],
        "starts_at": doc["starts_at"].isoformat() if doc.get("starts_at") else None,
        "ends_at": doc["ends_at"].isoformat() if doc.get("ends_at") else None,
        "product_ids": doc.get("product_ids", []), "active": doc["active"],
        "redemptions": doc["redeemed"],
        "users": sum(1 for n in doc.get("users", {}).values() if n > 0),
        "created_at": doc["created_at"].isoformat(),
    }


class Coupons:
    """The admin's side (create, read, list, deactivate) and the expiry notices."""

    def __init__(self, store, *, source: str, cart_url: str, clock: Callable[[], datetime],
                 notify: Callable[[dict], Awaitable[object]]) -> None:
        self.store = store
        self.source = source
        self.cart_url = cart_url
        self.clock = clock
        self.notify = notify  # records the notifications an event causes (domain.notifications.Notifier.record)

    async def create(self, fields: dict) -> dict:
        doc = new_coupon(fields, self.clock())
        if not await self.store.insert(doc):
            raise Conflict("A coupon with this code exists.", code="coupon_exists", details={"code": doc["code"]})
        return doc

    async def get(self, code: str) -> dict:
        doc = await self.store.get(normalize_code(code))
        if doc is None:
            raise NotFound("No such coupon.", code="coupon_not_found")
        return doc

    async def set_active(self, code: str, active: bool) -> dict:
        """Deactivating stops new redemptions; redemptions already taken stay."""
        doc = await self.store.set_active(normalize_code(code), active, self.clock())
        if doc is None:
            raise NotFound("No such coupon.", code="coupon_not_found")
        return doc

    async def list(self, *, active: bool | None, skip: int, limit: int) -> tuple[list[dict], int]:
        return await self.store.list(active=active, skip=skip, limit=limit)

    async def remind_expiring(self) -> None:
        """`coupon_expiring` for each user who has used a coupon and may use it again, once
        it ends within EXPIRING_NOTICE. Reads only due coupons (index on the due time); the
        sender leases the coupon, and a notification's id derives from coupon, user and end,
        so a process taking over after a lease sends nobody a second one."""
        now = self.clock()
        for coupon in await self.store.expiring_due(now):
            code, ends = coupon["_id"], coupon["ends_at"]
            if not await self.store.lease_expiring(code, coupon["expiring_notice_at"], now + NOTICE_LEASE):
                continue
            if coupon["active"] and ends > now:
                for user_id, used in coupon.get("users", {}).items():
                    if 0 < used < coupon["per_user_limit"]:
                        await self.notify(cloud_event(
                            "coupon.expiring", self.source,
                            {"user_id": user_id, "code": coupon["code"], "ends_at": ends.isoformat(),
                             "cart_url": self.cart_url},
                            subject=user_id, event_id=uuid.uuid5(_NAMESPACE, f"{code}:{user_id}:{ends.isoformat()}").hex,
                            time=now))
            await self.store.finish_expiring(code)
