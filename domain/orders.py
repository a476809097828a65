"""Orders: the status table, pricing, and the public and event views of an order."""

from __future__ import annotations

from datetime import datetime

from domain.errors import Conflict, Invalid
from domain.money import to_decimal_string

# CONTRACT §2: the only allowed moves. Everything else is 409 invalid_transition.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"confirmed", "cancelled"}),
    "confirmed": frozenset({"processing", "cancelled"}),
    "processing": frozenset({"shipped", "cancelled"}),
    "shipped": frozenset({"delivered", "returned"}),
    "delivered": frozenset({"completed", "returned"}),
    "returned": frozenset({"refunded"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
    "refunded": frozenset(),
}
STATUSES = frozenset(TRANSITIONS)
# An owner may cancel only before the order is being worked on; admins per the table.
OWNER_CANCELLABLE = frozenset({"pending", "confirmed"})
# Internal states of an order being placed; never shown, never moved by the table.
PLACING, ABORTED = "placing", "aborted"

MAX_LINES = 100
MAX_QUANTITY = 1000


def check_transition(current: str, target: str) -> None:
    if target not in STATUSES:
        raise Invalid(f"Unknown status '{target}'.", details=[{"field": "status", "message": f"must be one of {sorted(STATUSES)}"}])
    if target not in TRANSITIONS.get(current, frozenset()):
        raise Conflict(f"An order cannot move from {current} to {target}.", code="invalid_transition",
                       details={"from": current, "to": target, "allowed": sorted(TRANSITIONS.get(current, ()))})


def sum_quantities(items: list[tuple[str, int]]) -> dict[str, int]:
    """Quantities per product, so that two lines of one product are reserved as one."""
    totals: dict[str, int] = {}
    for product_id, quantity in items:
        totals[product_id] = totals.get(product_id, 0) + quantity
    return totals


def price_lines(quantities: dict[str, int], products: dict[str, dict]) -> tuple[list[dict], int]:
    """Order lines and total from the stored prices (client prices are never used)."""
    lines = []
    for product_id, quantity in quantities.items():
        product = products[product_id]
        lines.append({
            "product_id": product_id,
            "name": product["name"],
            "sku": product.get("slug"),
            "unit_price_minor": product["price_minor"],
            "quantity": quantity,
            "line_total_minor": product["price_minor"] * quantity,
        })
    return lines, sum(line["line_total_minor"] for line in lines)


def order_number(sequence: int) -> str:
    return f"ORD-{sequence:06d}"


def history_entry(status: str, at: datetime, note: str | None, actor: str) -> dict:
    return {"status": status, "at": at, "note": note, "actor": actor}


def public_order(order: dict) -> dict:
    return {
        "id": order["_id"],
        "number": order["number"],
        "user_id": order["user_id"],
        "status": order["status"],
        "items": [
            {
                "product_id": line["product_id"],
                "name": line["name"],
                "unit_price": to_decimal_string(line["unit_price_minor"]),
                "quantity": line["quantity"],
                "line_total": to_decimal_string(line["line_total_minor"]),
            }
            for line in order["items"]
        ],
        # Orders placed before coupons and points have no subtotal of their own: it is the total.
        "subtotal": to_decimal_string(order.get("subtotal_minor", order["total_minor"])),
        "coupon_code": order.get("coupon_code"),
        "discount": to_decimal_string(order.get("discount_minor", 0)),
        "points_used": order.get("points_used", 0),
        "points_value": to_decimal_string(order.get("points_value_minor", 0)),
        "total": to_decimal_string(order["total_minor"]),
        "currency": order["currency"],
        "shipping_address": order.get("shipping_address"),
        "note": order.get("note"),
        "created_at": order["created_at"].isoformat(),
        "updated_at": order["updated_at"].isoformat(),
        "status_history": [
            {"status": h["status"], "at": h["at"].isoformat(), "note": h.get("note")} for h in order["status_history"]
        ],
    }


def event_data(order: dict) -> dict:
    """The `data` of every order.* event (CONTRACT §3), with the lines for consumers."""
    return {
        "order_id": order["_id"],
        "number": order["number"],
        "user_id": order["user_id"],
        "status": order["status"],
        "total": to_decimal_string(order["total_minor"]),
        "currency": order["currency"],
        "items": [{"product_id": line["product_id"], "quantity": line["quantity"]} for line in order["items"]],
    }
