"""Which events become which notifications, for whom.

One table, RULES: event type → the notifications it causes. Each rule names the
notification type (which is also its template), its category (what users filter on in
their preferences), its priority, its recipients, and how long a held message stays
relevant. `notification.requested` is not in the table: it carries its own type, title,
body and priority.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

from domain.events import Rejected
from domain.notification_policy import CATEGORIES, CHANNELS, PRIORITIES

_NAMESPACE = uuid.UUID("6f1d2f9e-1c4b-4a0e-9f3e-2b8a4c7d5e10")
# notification.requested from another service, bounded as POST /api/v1/notifications bounds it.
REQUESTED_TEXT_LIMITS = {"user_id": 64, "type": 64, "title": 200, "body": 2000}
MAX_EXPIRES_AFTER_S = 30 * 86400

# Recipients: the user the event concerns, every admin, or the users who asked to hear
# when a product is back in stock.
USER, ADMINS, STOCK_WATCHERS = "user", "admins", "stock_watchers"


@dataclass(frozen=True)
class Rule:
    type: str
    category: str
    priority: str = "normal"
    recipients: str = USER
    expires_after_s: int | None = None  # a message held longer than this is suppressed
    applies: Callable[[dict], bool] = lambda data: True
    topic: Callable[[dict], str | None] = lambda data: None  # newer push replaces older


def _order(type_: str, priority: str = "normal") -> Rule:
    # One push topic per order: "shipped" replaces an undelivered "confirmed".
    return Rule(type_, "order", priority, topic=lambda d: f"order-{d.get('order_id')}")


def _back_in_stock(data: dict) -> bool:
    return _number(data.get("previous")) <= 0 < _number(data.get("available"))


def _number(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


RULES: dict[str, tuple[Rule, ...]] = {
    "order.created": (_order("order_created"),),
    "order.confirmed": (_order("order_confirmed"),),
    "order.shipped": (_order("order_shipped"),),
    "order.delivered": (_order("order_delivered"),),
    "order.cancelled": (_order("order_cancelled"),),
    "order.returned": (_order("order_returned"),),
    "order.refunded": (_order("order_refunded"),),
    "payment.succeeded": (Rule("payment_succeeded", "payment"),),
    "payment.failed": (Rule("payment_failed", "payment", "high"),),
    "payment.refunded": (Rule("payment_refunded", "payment"),),
    "points.awarded": (Rule("points_awarded", "points", "low", topic=lambda d: "points"),),
    "points.redeemed": (Rule("points_redeemed", "points", topic=lambda d: "points"),),
    "points.reversed": (Rule("points_reversed", "points", topic=lambda d: "points"),),
    "points.expired": (Rule("points_expired", "points", "low", topic=lambda d: "points"),),
    "inventory.changed": (Rule("back_in_stock", "stock", recipients=STOCK_WATCHERS, expires_after_s=24 * 3600,
                               applies=_back_in_stock, topic=lambda d: f"stock-{d.get('product_id')}"),),
    "inventory.low": (Rule("stock_low", "stock", recipients=ADMINS, expires_after_s=3600,
                           topic=lambda d: f"low-{d.get('product_id')}"),),
    # Reminders (docs/cart.md): marketing, so a user who turned marketing off gets none.
    "cart.abandoned": (Rule("cart_reminder", "marketing", "low", topic=lambda d: "cart"),),
    "coupon.expiring": (Rule("coupon_expiring", "marketing", "low", topic=lambda d: f"coupon-{d.get('code')}"),),
}

# The types whose data must name the user they concern.
_NEEDS_USER = {"order", "payment", "points", "cart", "coupon"}


@dataclass(frozen=True)
class Planned:
    """A notification an event causes, before its recipients are looked up."""

    rule: Rule
    title: str | None = None  # given by notification.requested; else from the template
    body: str | None = None
    channels: tuple[str, ...] = CHANNELS


def notification_id(event_id: str, notification_type: str, user_id: str) -> str:
    """Stable per event, type and recipient: a redelivered event finds what it recorded."""
    return uuid.uuid5(_NAMESPACE, f"{event_id}\x00{notification_type}\x00{user_id}").hex


def plan(event: dict) -> list[Planned]:
    """The notifications `event` causes (maybe none). Raises Rejected for an event whose
    data cannot make sense (the consumer dead-letters it with the reason)."""
    event_type, data = event["type"], event["data"]
    if event_type == "notification.requested":
        return [requested(data)]
    rules = RULES.get(event_type, ())
    if rules and event_type.split(".")[0] in _NEEDS_USER and not _text(data.get("user_id") or event.get("subject")):
        raise Rejected(f"{event_type} names no user_id")
    return [Planned(rule) for rule in rules if rule.applies(data)]


def requested(data: dict) -> Planned:
    """`notification.requested` as given: its own type, title, body, priority, channels."""
    for name, limit in REQUESTED_TEXT_LIMITS.items():
        if not _text(data.get(name)) or len(data[name]) > limit:
            raise Rejected(f"notification.requested needs a non-empty string '{name}' of at most {limit} characters")
    priority = data.get("priority", "normal")
    if priority not in PRIORITIES:
        raise Rejected(f"priority must be one of {', '.join(PRIORITIES)}")
    channels = data.get("channels")
    if channels is None:
        channels = list(CHANNELS)
    if not isinstance(channels, list) or not channels or not set(channels) <= set(CHANNELS):
        raise Rejected(f"channels must be a non-empty list of {', '.join(CHANNELS)}")
    if "data" in data and not isinstance(data["data"], dict):
        raise Rejected("'data' must be an object")
    category = data.get("category") or _category_of(data["type"])
    if category not in CATEGORIES:
        raise Rejected(f"category must be one of {', '.join(CATEGORIES)}")
    ttl = data.get("expires_after_s")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= MAX_EXPIRES_AFTER_S):
        raise Rejected(f"expires_after_s must be a positive integer up to {MAX_EXPIRES_AFTER_S}")
    rule = Rule(data["type"], category, priority, expires_after_s=ttl)
    return Planned(rule, data["title"], data["body"], tuple(c for c in CHANNELS if c in channels))


def _category_of(notification_type: str) -> str:
    """`order_delayed` is in category `order`; a type that names no category is marketing."""
    head = notification_type.replace(".", "_").split("_")[0]
    return head if head in CATEGORIES else "marketing"


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def recipient_user(event: dict) -> str:
    return event["data"].get("user_id") or event.get("subject")
