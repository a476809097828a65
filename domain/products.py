"""Products: slugs, the public view, and inventory events derived from stock moves.

Every stock change is stored in the product document, atomically with the change, as an
outbox entry `{id, delta, at, ...}` (JSON text: a busy product carries dozens of pending
entries, and the store copies the document on every update) appended in order. The relay publishes the oldest
entries first and removes only what it published, so the entries still in the document
are always the newest ones; hence for the entry at index i, taken from one snapshot,
`available = stock - sum(delta of later entries)` and `previous = available - delta`.
That gives exact `available`/`previous` values without reading before writing.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from datetime import datetime

from domain.events import cloud_event, event_time
from domain.money import to_decimal_string

DEFAULT_LOW_STOCK_THRESHOLD = 10
_LOW_NAMESPACE = uuid.UUID("6f1d2b4e-1c55-4d57-9b0e-6a8a1f1f0c01")
SORTS = ("newest", "price", "-price", "name")  # how the product list may be ordered (hub/stores/products.py)


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:80].rstrip("-") or "product"


def search_text(name: str, description: str | None, category: str | None) -> str:
    """What catalog search matches, lower-cased once at write time so a search is one
    substring test per product instead of three case-insensitive ones."""
    # Joined by a character no query contains, so a query never matches across two fields.
    return "\x00".join(part for part in (name, description, category) if part).lower()


def public_product(doc: dict) -> dict:
    return {
        "id": doc["_id"],
        "name": doc["name"],
        "slug": doc["slug"],
        "description": doc.get("description"),
        "category": doc.get("category"),
        "price": to_decimal_string(doc["price_minor"]),
        "currency": doc["currency"],
        "stock": doc["stock"],
        "low_stock_threshold": doc["low_stock_threshold"],
        "points_price": doc.get("points_price"),
        "created_at": doc["created_at"].isoformat(),
        "updated_at": doc["updated_at"].isoformat(),
    }


def stock_entry(delta: int, at: datetime, reason: str, order_id: str | None = None) -> str:
    return json.dumps({"id": uuid.uuid4().hex, "delta": delta, "at": event_time(at), "reason": reason, "order_id": order_id})


def inventory_events(doc: dict, source: str) -> list[dict]:
    """The CloudEvents for a product document's pending outbox entries: `inventory.changed`
    for each, plus `inventory.low` when one crosses below the threshold."""
    threshold = doc["low_stock_threshold"]
    entries = [json.loads(text) for text in doc.get("outbox", [])]
    later = 0
    computed = []
    for entry in reversed(entries):
        available = doc["stock"] - later
        later += entry["delta"]
        computed.append((entry, available, available - entry["delta"]))
    events = []
    for entry, available, previous in reversed(computed):
        data = {
            "product_id": doc["_id"],
            "available": available,
            "previous": previous,
            "low_stock_threshold": threshold,
            "reason": entry["reason"],
            "order_id": entry.get("order_id"),
            "price": to_decimal_string(doc["price_minor"]),
        }
        events.append(cloud_event("inventory.changed", source, data, event_id=entry["id"], time=entry["at"]))
        if available < threshold <= previous:
            low_id = uuid.uuid5(_LOW_NAMESPACE, entry["id"]).hex  # stable across re-publishing
            events.append(cloud_event("inventory.low", source, data, event_id=low_id, time=entry["at"]))
    return events
