"""Realtime channels (CONTRACT §4): which channels an event goes to, and who may join one.

A channel as clients name it (`product:<id>`, `order:<id>`, `user`, `admin:orders`) maps to a
key shared by all processes; `user` is the caller's own, `user:<their id>`.
"""

from __future__ import annotations

import re

from domain.callers import Caller
from domain.errors import Forbidden, Invalid

ADMIN_ORDERS = "admin:orders"
_ID = r"[A-Za-z0-9_-]{1,64}"
_NAMED = re.compile(rf"(product|order):({_ID})")


def feeds_for_event(event: dict, own_source: str) -> list[str]:
    """The channel keys a CloudEvent is published on.

    Order, payment and points events count only as the hub announces them: another service's
    event on those topics takes effect (or not) through the hub's consumers, and the hub's own
    event about the change follows, so each change reaches subscribers once and only if it
    happened.
    """
    kind = event["type"].split(".", 1)[0]
    data = event.get("data") or {}
    if kind == "inventory":
        return [f"product:{data['product_id']}"] if isinstance(data.get("product_id"), str) else []
    if kind not in ("order", "payment", "points") or event.get("source") != own_source:
        return []
    keys = []
    if isinstance(data.get("order_id"), str):
        keys.append(f"order:{data['order_id']}")
    if isinstance(data.get("user_id"), str):
        keys.append(f"user:{data['user_id']}")
    if kind == "order":
        keys.append(ADMIN_ORDERS)
    return keys


def parse_feed(channel) -> tuple[str, str | None]:
    """(kind, id) of a channel name a client sent; Invalid if it is no channel."""
    if channel == "user" or channel == ADMIN_ORDERS:
        return channel, None
    match = _NAMED.fullmatch(channel) if isinstance(channel, str) else None
    if match is None:
        raise Invalid("Channels are product:<id>, order:<id>, user and admin:orders.", code="invalid_channel")
    return match.group(1), match.group(2)


def feed_key(kind: str, ident: str | None, caller: Caller | None) -> str:
    """The shared key of a channel the caller may join (orders are checked separately:
    `may_watch_order`); Forbidden otherwise."""
    if kind == "product":
        return f"product:{ident}"
    if caller is None:
        raise Forbidden("Authenticate to join this channel.")
    if kind == "user":
        return f"user:{caller.id}"
    if kind == ADMIN_ORDERS:
        if not caller.is_admin:
            raise Forbidden("Only admins may join admin:orders.")
        return ADMIN_ORDERS
    return f"order:{ident}"


def may_watch_order(caller: Caller, order_owner: str | None) -> bool:
    """The owner or an admin; nobody for an order that does not exist (no existence leak:
    the answer is the same for someone else's order)."""
    return order_owner is not None and (caller.is_admin or caller.id == order_owner)


def client_name(key: str) -> str:
    """The channel's name in frames: what the client subscribed to."""
    return "user" if key.startswith("user:") else key


def conflatable(key: str) -> bool:
    """Stock and price updates are states: a slow client needs only the latest per product."""
    return key.startswith("product:")
