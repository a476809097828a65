"""Placing, moving and cancelling orders, and the clean-up of what a dead process left.

Placing an order (no multi-document transactions needed, so the same code runs on the
embedded store and on a standalone MongoDB):
1. insert the order as `placing` (its id derives from the Idempotency-Key, so a replay
   finds it); it is invisible to readers;
2. take stock per product with one conditional update each, leaving a marker;
   if one fails, give back what was taken (exactly once, by marker) and delete the order;
3. move the order `placing → pending` with its `order.created` event (compare-and-set);
4. settle the markers.
If the process dies anywhere in between, the sweeper finds the expired markers or the
stale `placing` order and finishes the job in the right direction.

Cancelling gives stock back the same way: give back under a marker, record the product
on the order, settle the marker; the status compare-and-set makes it happen once. A paid
order's cancel also sets `refund_pending` in the same move; the money then goes back
through domain/payments.py `refund_cancelled`, and the sweeper retries what is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Callable

from domain.callers import Caller
from domain.errors import Conflict, Invalid, NotFound, RateLimited
from domain.events import Rejected, cloud_event
from domain.orders import (ABORTED, OWNER_CANCELLABLE, PLACING, STATUSES, check_transition, event_data,
                           history_entry, order_number, price_lines, sum_quantities)
from domain.payments import REFUND_GRACE

log = logging.getLogger(__name__)

_IDEMPOTENCY_NAMESPACE = uuid.UUID("3b0c7c4e-58f4-4e7c-a1f5-0d8f3a6c2b11")
PLACING_TTL = timedelta(seconds=30)
MAX_NOTE = 500  # a status change's note, as PATCH /orders/{id} takes it
PAID_BY_DISCOUNTS = "discounts"  # `paid_by` of an order the coupon and points paid in full: no money to give back


class TooManyUnpaidOrders(RateLimited):
    code = "too_many_unpaid_orders"


class Orders:
    def __init__(self, orders, products, *, source: str, currency: str, payment_timeout_s: int,
                 clock: Callable[[], datetime], max_unpaid: int | None = None) -> None:
        self.orders = orders
        # Orders awaiting payment hold stock: one account may not sit on all of it.
        self.max_unpaid = max_unpaid
        self.products = products
        self.checkout = None  # domain.checkout.Checkout (coupons and points on orders), set by the hub once built
        self.payments = None  # domain.payments.Payments (refunds of cancelled paid orders), set by the hub once built
        self.source = source
        self.currency = currency
        self.payment_timeout = timedelta(seconds=payment_timeout_s)
        self.clock = clock

    # Placing ---------------------------------------------------------------------------
    async def place(self, user_id: str, items: list[tuple[str, int]], *, shipping_address=None,
                    note: str | None = None, idempotency_key: str | None = None, coupon_code: str | None = None,
                    points: int = 0, from_cart: bool = False) -> tuple[dict, bool]:
        """The order and whether it was created now (False: an idempotent replay). `from_cart`:
        the items, coupon and points are the cart's, so a replay is recognised by the rest of
        the request, not by the cart (which the first request emptied)."""
        request = {"items": "cart" if from_cart else items, "shipping_address": shipping_address, "note": note}
        if (coupon_code or points) and not from_cart:
            request.update(coupon_code=coupon_code, points=points)
        fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        if idempotency_key is not None:
            order_id = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{user_id}\n{idempotency_key}").hex
            existing = await self.orders.get(order_id, include_hidden=True)
            if existing is not None:
                return await self._replay(existing, fingerprint), False
        else:
            order_id = uuid.uuid4().hex
        if not items:
            raise Invalid("The cart is empty.", code="cart_empty")

        quantities = sum_quantities(items)
        products = await self.products.get_many(list(quantities))
        unknown = [pid for pid in quantities if pid not in products]
        if unknown:
            raise Invalid("Some products do not exist.", code="unknown_product",
                          details=[{"field": "items", "product_id": pid, "message": "no such product"} for pid in unknown])
        short = [pid for pid, qty in quantities.items() if products[pid]["stock"] < qty]
        if short:  # already visible without writing anything (a sold-out rush is mostly this)
            raise Conflict("Not enough stock for this order; nothing was reserved.", code="out_of_stock",
                           details=[{"product_id": pid, "requested": quantities[pid], "available": products[pid]["stock"]}
                                    for pid in short])
        lines, total = price_lines(quantities, products)
        priced = {"subtotal_minor": total, "total_minor": total}
        if coupon_code or points:  # refused here (422 coupon_invalid, 409 insufficient_points) before taking stock
            priced = await self.checkout.quote(user_id, lines, total, coupon_code, points)
        now = self.clock()
        expires = now + PLACING_TTL
        order = {
            "_id": order_id, "number": order_number(await self.orders.next_number()), "user_id": user_id,
            "status": PLACING, "items": lines, **priced, "currency": self.currency,
            "shipping_address": shipping_address, "note": note, "created_at": now, "updated_at": now,
            "status_history": [], "outbox": [], "idempotency_key": idempotency_key, "fingerprint": fingerprint,
            "placing_expires_at": expires, "restock_pending": False, "restocked": [],
        }
        if not await self.orders.insert(order):  # a concurrent request with the same key won
            return await self._replay(await self.orders.get(order_id, include_hidden=True), fingerprint), False
        # Counted with this order in, so that concurrent placements never get past the cap together.
        if self.max_unpaid is not None and await self.orders.count_unpaid(user_id) > self.max_unpaid:
            await self.orders.delete_placing(order_id)
            error = TooManyUnpaidOrders(f"At most {self.max_unpaid} orders may await payment at once; "
                                        "pay or cancel one first.", retry_after=60)
            error.details["limit"] = self.max_unpaid
            raise error

        marker = f"{order_id}:take"
        taken = []
        for product_id, quantity in quantities.items():
            if not await self.products.take(product_id, quantity, marker, expires, now, order_id):
                await self._abandon(order_id, taken, marker, "order_failed")
                raise Conflict("Not enough stock for this order; nothing was reserved.", code="out_of_stock",
                               details=await self._shortfall(quantities, failed=product_id))
            taken.append(product_id)
        if coupon_code or points:
            try:
                await self.checkout.take(order)
            except (Conflict, Invalid):
                await self._abandon(order_id, taken, marker, "order_failed")
                raise

        history = history_entry("pending", now, None, user_id)
        event = cloud_event("order.created", self.source, event_data({**order, "status": "pending"}), subject=user_id, time=now)
        placed = await self.orders.move(order_id, PLACING, "pending", history=history, event=event, now=now)
        if placed is None:  # too slow: the sweeper already gave the stock back
            await self._abandon(order_id, taken, marker, "order_failed")
            raise Conflict("The order took too long to place; nothing was reserved. Try again.", code="order_timeout")
        for product_id in taken:
            await self.products.settle(product_id, marker)
        if coupon_code or points:
            await self.checkout.settle(placed)
            if placed["total_minor"] == 0:  # nothing left to pay: paid by the coupon and points
                placed = await self.transition(placed, "confirmed", note="paid with coupon and points", actor="system",
                                               only_from=frozenset({"pending"}), record={"paid_by": PAID_BY_DISCOUNTS})
        return placed, True

    async def _replay(self, existing: dict | None, fingerprint: str) -> dict:
        for _ in range(50):  # the first request may still be placing it
            if existing is None:
                raise Conflict("A request with this Idempotency-Key failed; retry it.", code="idempotency_key_in_use")
            if existing["fingerprint"] != fingerprint:
                raise Invalid("This Idempotency-Key was used with a different request body.", code="idempotency_key_reused")
            if existing["status"] != PLACING:
                break
            await asyncio.sleep(0.05)
            existing = await self.orders.get(existing["_id"], include_hidden=True)
        if existing is None or existing["status"] in (PLACING, ABORTED):
            raise Conflict("A request with this Idempotency-Key is still in progress.", code="idempotency_key_in_use")
        return existing

    async def _abandon(self, order_id: str, taken: list[str], marker: str, reason: str) -> None:
        now = self.clock()
        for product_id in taken:
            await self.products.undo_take(product_id, marker, now, order_id, reason)
        if self.checkout is not None:
            await self.checkout.undo(order_id)
        await self.orders.delete_placing(order_id)

    async def _shortfall(self, quantities: dict[str, int], failed: str) -> list[dict]:
        current = await self.products.get_many(list(quantities))
        return [
            {"product_id": pid, "requested": qty, "available": current[pid]["stock"] if pid in current else 0}
            for pid, qty in quantities.items()
            if pid == failed or pid not in current or current[pid]["stock"] < qty
        ]

    # Reading -----------------------------------------------------------------------
    async def visible(self, order_id: str, caller: Caller) -> dict:
        """The order if the caller may see it; another user's order is simply not found."""
        order = await self.orders.get(order_id)
        if order is None or not (caller.is_admin or caller.is_service or order["user_id"] == caller.id):
            raise NotFound("No such order.", code="order_not_found")
        return order

    async def owner(self, order_id: str) -> str | None:
        """Whose order this is, None if there is none: who may watch it live
        (domain/feeds.py may_watch_order)."""
        order = await self.orders.get(order_id)
        return order and order["user_id"]

    async def list_for(self, caller: Caller, *, user_id: str | None, status: str | None,
                       skip: int, limit: int) -> tuple[list[dict], int]:
        """A customer's own orders; admins and services may list anyone's."""
        if not (caller.is_admin or caller.is_service):
            user_id = caller.id
        return await self.orders.list(user_id=user_id, status=status, skip=skip, limit=limit)

    # Moving ------------------------------------------------------------------------
    async def cancel(self, order_id: str, caller: Caller, reason: str | None) -> dict:
        order = await self.visible(order_id, caller)
        only_from = None if caller.is_admin or caller.is_service else OWNER_CANCELLABLE
        return await self.transition(order, "cancelled", note=reason, actor=caller.id, only_from=only_from)

    async def transition(self, order: dict, target: str, *, note: str | None, actor: str,
                         event_id: str | None = None, only_from: frozenset[str] | None = None,
                         record: dict | None = None) -> dict:
        """Move `order` to `target` per the table, once, with its event and history entry.
        `only_from` narrows the table for this caller (an owner's cancel, the payment timeout)
        and holds even when the order moves concurrently. `record` is stored with the move."""
        while True:
            if only_from is not None and order["status"] not in only_from:
                raise Conflict(f"A {order['status']} order cannot be moved to {target} here.", code="invalid_transition",
                               details={"from": order["status"], "to": target, "allowed_from": sorted(only_from)})
            check_transition(order["status"], target)
            now = self.clock()
            event = cloud_event(f"order.{target}", self.source, event_data({**order, "status": target}),
                                subject=order["user_id"], time=now)
            if event_id is not None:
                event["causationid"] = event_id  # CloudEvents extension: the external event applied
            gives_back = target in ("cancelled", "refunded") and bool(order.get("coupon_code") or order.get("points_used"))
            refunds = target == "cancelled" and order.get("paid_by") not in (None, PAID_BY_DISCOUNTS)
            moved = await self.orders.move(
                order["_id"], order["status"], target, history=history_entry(target, now, note, actor), event=event,
                now=now, extra={**(record or {}), **({"restock_pending": True} if target == "cancelled" else {}),
                                **({"release_pending": True} if gives_back else {}),
                                **({"refund_pending": True, "refund_due_at": now + REFUND_GRACE} if refunds else {})},
                event_id=event_id,
                # A payment claiming the order meanwhile (claim_payment) must not slip past the refund.
                unchanged={"paid_by": order.get("paid_by")} if target == "cancelled" else None)
            if moved is not None:
                break
            # Someone moved it first: judge the request against what it is now.
            order = await self.orders.get(order["_id"])
            if order is None:
                raise NotFound("No such order.", code="order_not_found")
            if event_id is not None and await self.orders.has_applied(order["_id"], event_id):
                return order
        if target == "cancelled":
            await self.restock(moved)
        if moved.get("release_pending"):
            await self.checkout.give_back(moved)
        if moved.get("refund_pending"):
            await self.payments.refund_cancelled(moved)
        return moved

    async def restock(self, order: dict) -> None:
        marker = f"{order['_id']}:restock"
        now = self.clock()
        for line in order["items"]:
            product_id = line["product_id"]
            if product_id in order.get("restocked", []):
                continue
            await self.products.give_back(product_id, line["quantity"], marker, now + PLACING_TTL, now, order["_id"],
                                          "order_cancelled")
            await self.orders.mark_restocked(order["_id"], product_id)
            await self.products.settle(product_id, marker)
        await self.orders.finish_restock(order["_id"])

    # Events from other services ----------------------------------------------------
    async def apply_external(self, event: dict) -> None:
        """An `order.<status>` event from another service, through the same table."""
        target = event["type"].removeprefix("order.")
        if target not in STATUSES or target == "pending":
            raise Rejected(f"event type {event['type']} cannot be applied to an order")
        order_id = event["data"].get("order_id")
        if not isinstance(order_id, str) or not order_id:
            raise Rejected("data.order_id is missing")
        order = await self.orders.get(order_id)
        if order is None:
            raise Rejected(f"unknown order {order_id}")
        note = event["data"].get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise Rejected(f"data.note must be a string of at most {MAX_NOTE} characters")
        if await self.orders.has_applied(order_id, event["id"]):
            return
        try:
            await self.transition(order, target, note=note or f"by {event['source']}",
                                  actor=event["source"], event_id=event["id"])
        except (Conflict, Invalid) as exc:
            raise Rejected(exc.message) from None

    # Clean-up (any number of hub processes may run this at once) ---------------------
    async def sweep(self) -> None:
        now = self.clock()
        for product_id, marker in await self.products.expired_holds(now):
            order_id, kind = marker.rsplit(":", 1)
            if kind not in ("take", "restock"):
                continue  # another owner's marker (points redemptions)
            order = await self.orders.get(order_id, include_hidden=True)
            if kind == "restock":  # the stock went back; record that, then settle
                await self.orders.mark_restocked(order_id, product_id)
                await self.products.settle(product_id, marker)
            elif order is None:
                await self.products.undo_take(product_id, marker, now, order_id, "order_abandoned")
            elif order["status"] in (PLACING, ABORTED):
                await self._clean_up_placement(order)
            else:
                await self.products.settle(product_id, marker)
        for order in await self.orders.stale_placing(now):
            await self._clean_up_placement(order)
        for order in await self.orders.restock_unfinished(now - PLACING_TTL):
            await self.restock(order)
        for order in await self.orders.refund_due(now):
            await self.payments.refund_cancelled(order)  # Stripe unreachable before, or the process died
        for order in await self.orders.unpaid(now - self.payment_timeout):
            try:
                await self.transition(order, "cancelled", note="payment timeout", actor="system",
                                      only_from=frozenset({"pending"}))
            except Conflict:
                pass  # paid or cancelled meanwhile

    async def _clean_up_placement(self, order: dict) -> None:
        """A placement whose process died (or stalled past PLACING_TTL): claim it, give back
        what it took, and delete it, so that a retry with the same Idempotency-Key starts afresh."""
        if await self.orders.abort_placing(order["_id"]):
            log.warning("abandoned order placement cleaned up", extra={"order_id": order["_id"]})
        await self._abandon(order["_id"], [line["product_id"] for line in order["items"]],
                            f"{order['_id']}:take", "order_abandoned")
