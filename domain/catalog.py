"""The catalog: creating, changing and removing products, and admin stock changes."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Callable

from domain.errors import Conflict, NotFound
from domain.products import DEFAULT_LOW_STOCK_THRESHOLD, search_text, slugify, stock_entry


class Catalog:
    def __init__(self, products, *, currency: str, clock: Callable[[], datetime]) -> None:
        self.products = products
        self.currency = currency
        self.clock = clock

    async def create(self, *, name: str, price_minor: int, stock: int, category: str | None = None,
                     description: str | None = None, low_stock_threshold: int | None = None,
                     points_price: int | None = None) -> dict:
        now = self.clock()
        doc = {
            "_id": uuid.uuid4().hex, "name": name, "description": description, "category": category,
            "price_minor": price_minor, "currency": self.currency, "stock": stock,
            "low_stock_threshold": DEFAULT_LOW_STOCK_THRESHOLD if low_stock_threshold is None else low_stock_threshold,
            "points_price": points_price, "deleted": False, "created_at": now, "updated_at": now,
            "search_text": search_text(name, description, category),
            "holds": [], "outbox": [stock_entry(stock, now, "created")] if stock else [],
        }
        base = slugify(name)
        for attempt in range(5):  # the unique index decides; a suffix separates namesakes
            doc["slug"] = base if attempt == 0 else f"{base}-{secrets.token_hex(3)}"
            if await self.products.insert(doc):
                return {k: v for k, v in doc.items() if k not in ("outbox", "holds", "search_text")}
        raise Conflict("Could not find a free slug for this name.", code="slug_taken")

    async def search(self, **filters) -> tuple[list[dict], int]:
        """Live products matching the filters, and how many match in all."""
        return await self.products.search(**filters)

    async def get(self, id_or_slug: str) -> dict:
        product = await self.products.get(id_or_slug) or await self.products.get_by_slug(id_or_slug)
        if product is None:
            raise NotFound("No such product.", code="product_not_found")
        return product

    async def update(self, product_id: str, changes: dict) -> dict:
        current = await self.products.get(product_id)
        if current is None:
            raise NotFound("No such product.", code="product_not_found")
        if not changes:
            return current
        merged = {**current, **changes}
        changes["search_text"] = search_text(merged["name"], merged.get("description"), merged.get("category"))
        product = await self.products.update_fields(product_id, changes, self.clock())
        if product is None:
            raise NotFound("No such product.", code="product_not_found")
        return product

    async def delete(self, product_id: str) -> None:
        """Hidden from the catalog; orders keep their own copy of name and price."""
        if not await self.products.soft_delete(product_id, self.clock()):
            raise NotFound("No such product.", code="product_not_found")

    async def change_stock(self, product_id: str, *, delta: int | None = None, value: int | None = None) -> dict:
        now = self.clock()
        if value is not None:
            product = await self.products.set_stock(product_id, value, now, "admin_set")
        else:
            product = await self.products.adjust_stock(product_id, delta, now, "admin_adjust")
        if product is None:
            current = await self.get(product_id)  # NotFound when there is no such product
            raise Conflict("Stock cannot go below zero.", code="insufficient_stock",
                           details={"available": current["stock"], "delta": delta})
        return product
