"""Loyalty points: earned when an order is paid, taken back on refund, spent in the
points mall, credited by other services. Every entry has an id derived from what caused
it (`award:<order>`, `reverse:<order>:<refunded total>`, `redeem:<redemption>`,
`event:<event id>`), so each happens once whatever the number of duplicates.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable

from domain.errors import Conflict, Invalid, NotFound
from domain.events import Rejected, cloud_event, event_time

REDEEM_TTL = timedelta(seconds=30)
MAX_AWARD = 1_000_000_000  # points in one award from another service (a product's points_price bound)
_EXPIRE = "expire:"


def expiring(entries: list[dict], now: datetime) -> tuple[list[tuple[str, int]], datetime | None]:
    """First in, first out: spending uses the oldest earned points first. Returns the
    (credit entry id, points left) of credits due to expire and not yet expired, and the
    next time one will be due."""
    credits = []  # [entry id, points left, expires_at]
    expired = {e["id"][len(_EXPIRE):] for e in entries if e["id"].startswith(_EXPIRE)}
    for entry in entries:
        if entry["delta"] > 0:
            credits.append([entry["id"], entry["delta"], entry.get("expires_at")])
        elif not entry["id"].startswith(_EXPIRE):
            spend = -entry["delta"]
            for credit in credits:
                used = min(credit[1], spend)
                credit[1] -= used
                spend -= used
    live = [c for c in credits if c[2] is not None and c[1] > 0 and c[0] not in expired]
    due = [(c[0], c[1]) for c in live if c[2] <= now]
    later = [c[2] for c in live if c[2] > now]
    return due, min(later, default=None)


def public_entry(entry: dict) -> dict:
    return {
        "id": entry["id"], "delta": entry["delta"], "reason": entry["reason"], "order_id": entry.get("order_id"),
        "at": entry["at"].isoformat(), "expires_at": entry["expires_at"].isoformat() if entry.get("expires_at") else None,
        "shortfall": entry.get("shortfall", 0),
    }


def public_redemption(doc: dict) -> dict:
    return {"id": doc["_id"], "product_id": doc["product_id"], "quantity": doc["quantity"], "points": doc["points"],
            "status": doc["status"], "created_at": doc["created_at"].isoformat()}


class Points:
    def __init__(self, store, products, *, source: str, per_unit: Decimal, ttl_days: int,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.products = products
        self.source = source
        self.per_unit = per_unit
        self.ttl = timedelta(days=ttl_days)
        self.clock = clock

    async def summary(self, user_id: str) -> dict:
        account = await self.store.account(user_id)
        return {"balance": account["balance"], "entries": [public_entry(e) for e in reversed(account["entries"])]}

    async def _apply(self, user_id: str, kind: str, delta: int, reason: str, entry_id: str, *,
                     order_id: str | None = None, expires_at: datetime | None = None, shortfall: int = 0,
                     expected_balance: int | None = None, hold: dict | None = None) -> int | None:
        """Append one entry and move the balance, as a compare-and-set on the balance (so the
        event can carry the exact balance after it). The balance after the entry once
        applied; None if the entry exists already, a debit is not covered, or
        `expected_balance` no longer holds."""
        while True:
            account = await self.store.account(user_id)
            balance = account["balance"]
            if any(e["id"] == entry_id for e in account["entries"]) or balance + delta < 0:
                return None
            if expected_balance is not None and balance != expected_balance:
                return None
            now = self.clock()
            entry = {"id": entry_id, "delta": delta, "reason": reason, "order_id": order_id, "at": now,
                     "expires_at": expires_at, "shortfall": shortfall}
            event = cloud_event(f"points.{kind}", self.source, {
                "user_id": user_id, "delta": delta, "balance": balance + delta, "reason": reason,
                "order_id": order_id, "entry_id": entry_id}, subject=user_id, time=event_time(now))
            if await self.store.apply(user_id, entry, event, expected_balance=balance, hold=hold):
                return balance + delta
            if expected_balance is not None:
                return None

    # Earning and reversing -----------------------------------------------------------
    async def award_for_order(self, order: dict) -> None:
        points = math.floor(Decimal(order["total_minor"]) / 100 * self.per_unit)
        if points <= 0:
            return
        await self._apply(order["user_id"], "awarded", points, "order_paid", f"award:{order['_id']}",
                          order_id=order["_id"], expires_at=self.clock() + self.ttl)

    async def reverse_for_order(self, order: dict, refunded_minor: int, paid_minor: int) -> None:
        """Take back the points of a refunded order, proportionally to what was refunded
        so far; what was already spent is recorded as a shortfall (never a negative balance)."""
        user_id = order["user_id"]
        entry_id = f"reverse:{order['_id']}:{refunded_minor}"
        while True:
            account = await self.store.account(user_id)
            entries = account["entries"]
            awarded = sum(e["delta"] for e in entries if e["id"] == f"award:{order['_id']}")
            if not awarded or any(e["id"] == entry_id for e in entries):
                return
            target = awarded if refunded_minor >= paid_minor else awarded * refunded_minor // paid_minor
            already = sum(-e["delta"] + e.get("shortfall", 0) for e in entries
                          if e["reason"] == "order_refunded" and e.get("order_id") == order["_id"])
            wanted = target - already
            if wanted <= 0:
                return
            take = min(wanted, account["balance"])
            if await self._apply(user_id, "reversed", -take, "order_refunded", entry_id, order_id=order["_id"],
                                 shortfall=wanted - take, expected_balance=account["balance"]) is not None:
                return

    async def apply_external(self, event: dict) -> None:
        """`points.awarded` from another service (a marketing bonus): credited once."""
        if event["type"] != "points.awarded":
            raise Rejected(f"{event['type']} from other services is not applied; only points.awarded")
        data = event["data"]
        user_id, delta = data.get("user_id"), data.get("delta")
        if not isinstance(user_id, str) or not 1 <= len(user_id) <= 64:
            raise Rejected("data.user_id is missing or too long")
        if not isinstance(delta, int) or isinstance(delta, bool) or not 0 < delta <= MAX_AWARD:
            raise Rejected(f"data.delta must be a positive integer up to {MAX_AWARD}")
        reason = str(data.get("reason") or f"awarded by {event['source']}")[:200]
        await self._apply(user_id, "awarded", delta, reason, f"event:{event['id']}", expires_at=self.clock() + self.ttl)

    # Spending at checkout ------------------------------------------------------------
    async def spend_for_order(self, user_id: str, order_id: str, points: int, hold_until: datetime) -> int | None:
        """Take `points` for an order being placed, once (entry `spend:<order>`), leaving the
        marker `<order>:points` until the order is placed; the balance after, or None when
        the balance does not cover it."""
        return await self._apply(user_id, "redeemed", -points, "order_checkout", f"spend:{order_id}",
                                 order_id=order_id, hold={"id": f"{order_id}:points", "expires_at": hold_until})

    async def return_for_order(self, user_id: str, order_id: str) -> None:
        """Give back what `spend_for_order` took, once (entry `return:<order>`), if it took
        anything. (Its reason is not `order_refunded`: that one counts refund reversals.)"""
        account = await self.store.account(user_id)
        spent = sum(-e["delta"] for e in account["entries"] if e["id"] == f"spend:{order_id}")
        if spent:
            await self._apply(user_id, "returned", spent, "order_points_returned", f"return:{order_id}",
                              order_id=order_id)

    async def settle_spend(self, user_id: str, order_id: str) -> None:
        await self.store.settle(user_id, f"{order_id}:points")

    # The points mall -----------------------------------------------------------------
    async def redeem(self, user_id: str, product_id: str, quantity: int) -> tuple[dict, int]:
        """Stock first (one conditional update), then points (one guarded update); if the
        points are short the stock goes back. A crash in between leaves a marker that
        `sweep` resolves: points spent → keep, else give the stock back."""
        product = await self.products.get(product_id)
        if product is None:
            raise NotFound("No such product.", code="product_not_found")
        if not product.get("points_price"):
            raise Invalid("This product cannot be bought with points.", code="not_redeemable")
        cost = product["points_price"] * quantity
        now = self.clock()
        redemption = {"_id": uuid.uuid4().hex, "user_id": user_id, "product_id": product_id, "quantity": quantity,
                      "points": cost, "status": "pending", "created_at": now}
        await self.store.insert_redemption(redemption)
        marker = f"{redemption['_id']}:redeem"
        if not await self.products.take(product_id, quantity, marker, now + REDEEM_TTL, now, None):
            await self.store.set_redemption_status(redemption["_id"], "failed")
            current = await self.products.get(product_id)
            raise Conflict("Not enough stock.", code="out_of_stock", details=[
                {"product_id": product_id, "requested": quantity, "available": current["stock"] if current else 0}])
        balance = await self._apply(user_id, "redeemed", -cost, "redeemed", f"redeem:{redemption['_id']}")
        if balance is None:
            await self.products.undo_take(product_id, marker, self.clock(), None, "redemption_failed")
            await self.store.set_redemption_status(redemption["_id"], "failed")
            account = await self.store.account(user_id)
            raise Conflict("Not enough points.", code="insufficient_points",
                           details={"required": cost, "balance": account["balance"]})
        await self.store.set_redemption_status(redemption["_id"], "completed")
        await self.products.settle(product_id, marker)
        redemption["status"] = "completed"
        return redemption, balance

    async def redemptions(self, user_id: str) -> list[dict]:
        return await self.store.user_redemptions(user_id)

    async def expire(self) -> None:
        """Record `points.expired` for earned points past POINTS_TTL_DAYS (any number of
        hub processes may run this: each expiry entry's id is its credit's)."""
        now = self.clock()
        for user_id in await self.store.due_for_expiry(now):
            while True:
                account = await self.store.account(user_id)
                due, next_expiry = expiring(account["entries"], now)
                if not due:
                    if await self.store.set_next_expiry(user_id, len(account["entries"]), next_expiry):
                        break
                    continue
                credit_id, left = due[0]
                take = min(left, account["balance"])
                await self._apply(user_id, "expired", -take, "expired", f"{_EXPIRE}{credit_id}",
                                  shortfall=left - take, expected_balance=account["balance"])

    async def sweep(self) -> None:
        """Finish redemptions whose process died between taking stock and spending points
        (safe on several processes: settling and undoing are once-only by marker)."""
        now = self.clock()
        for product_id, marker in await self.products.expired_holds(now):
            redemption_id, kind = marker.rsplit(":", 1)
            if kind != "redeem":
                continue
            redemption = await self.store.redemption(redemption_id)
            spent = redemption is not None and await self.store.has_entry(redemption["user_id"], f"redeem:{redemption_id}")
            if spent:
                await self.store.set_redemption_status(redemption_id, "completed")
                await self.products.settle(product_id, marker)
            else:
                await self.products.undo_take(product_id, marker, now, None, "redemption_failed")
                if redemption is not None:
                    await self.store.set_redemption_status(redemption_id, "failed")
