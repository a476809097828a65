"""Feeds: what a WebSocket client subscribes to (CONTRACT §4 calls them channels, and its
frames name one in their `channel` field). Which feeds an event goes to, who may join one,
and the one place every feed key is built.

A feed as clients name it (`product:<id>`, `order:<id>`, `user`, `admin:orders`) maps to a
key shared by all processes; `user` is the caller's own, `user:<their id>`. ("Channel" in
the code means a delivery channel: email, SMS, push, websocket; see docs/realtime.md.)
"""

from __future__ import annotations

import re

from domain.callers import Caller
from domain.errors import Forbidden, Invalid

ADMIN_ORDERS = "admin:orders"
_ID = r"[A-Za-z0-9_-]{1,64}"
_NAMED = re.compile(rf"(product|order):({_ID})")


def product_feed(product_id: str) -> str:
    return f"product:{product_id}"


def order_feed(order_id: str) -> str:
    return f"order:{order_id}"


def user_feed(user_id: str) -> str:
    return f"user:{user_id}"


def feeds_for_event(event: dict, own_source: str) -> list[str]:
    """The feed keys a CloudEvent is published on.

    Order, payment and points events count only as the hub announces them: another service's
    event on those topics takes effect (or not) through the hub's consumers, and the hub's own
    event about the change follows, so each change reaches subscribers once and only if it
    happened.
    """
    kind = event["type"].split(".", 1)[0]
    data = event.get("data") or {}
    if kind == "inventory":
        return [product_feed(data['product_id'])] if isinstance(data.get("product_id"), str) else []
    if kind not in ("order", "payment", "points") or event.get("source") != own_source:
        return []
    keys = []
    if isinstance(data.get("order_id"), str):
        keys.append(order_feed(data['order_id']))
    if isinstance(data.get("user_id"), str):
        keys.append(user_feed(data['user_id']))
    if kind == "order":
        keys.append(ADMIN_ORDERS)
    return keys


def parse_feed(name) -> tuple[str, str | None]:
    """(kind, id) of a feed name a client sent; Invalid if it is no feed."""
    if name == "user" or name == ADMIN_ORDERS:
        return name, None
    match = _NAMED.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise Invalid("Channels are product:<id>, order:<id>, user and admin:orders.", code="invalid_channel")
    return match.group(1), match.group(2)


def feed_key(kind: str, ident: str | None, caller: Caller | None) -> str:
    """The shared key of a feed the caller may join (orders are checked separately:
    `may_watch_order`); Forbidden otherwise."""
    if kind == "product":
        return product_feed(ident)
    if caller is None:
        raise Forbidden("Authenticate to join this channel.")
    if kind == "user":
        return user_feed(caller.id)
    if kind == ADMIN_ORDERS:
        if not caller.is_admin:
            raise Forbidden("Only admins may join admin:orders.")
        return ADMIN_ORDERS
    return order_feed(ident)


def may_watch_order(caller: Caller, order_owner: str | None) -> bool:
    """The owner or an admin; nobody for an order that does not exist (no existence leak:
    the answer is the same for someone else's order)."""
    return order_owner is not None and (caller.is_admin or caller.id == order_owner)


def client_name(key: str) -> str:
    """The feed's name in frames (their `channel` field): what the client subscribed to."""
    return "user" if key.startswith("user:") else key


def conflatable(key: str) -> bool:
    """Stock and price updates are states: a slow client needs only the latest per product."""
    return key.startswith("product:")
