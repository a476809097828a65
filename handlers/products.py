"""Catalog endpoints: /api/v1/products[/{id}[/stock]]."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator

from domain.feeds import product_feed
from domain.products import SORTS, public_product
from handlers.base import BaseHandler
from handlers.schemas import Body, Price, QueryPrice

Count = Annotated[StrictInt, Field(ge=0, le=1_000_000_000)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class ProductBody(Body):
    name: Text
    price: Price
    stock: Count
    category: Annotated[str, Field(max_length=100)] | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    low_stock_threshold: Count | None = None
    points_price: Annotated[StrictInt, Field(ge=1, le=1_000_000_000)] | None = None


class ProductPatch(Body):
    name: Text = None  # type: ignore[assignment]  # may be left out, never null
    price: Price = None  # type: ignore[assignment]
    category: Annotated[str, Field(max_length=100)] | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    low_stock_threshold: Count = None  # type: ignore[assignment]
    points_price: Annotated[StrictInt, Field(ge=1, le=1_000_000_000)] | None = None


class StockBody(Body):
    # Exactly one of the two (the document says so with oneOf); neither may be null.
    model_config = {**Body.model_config, "json_schema_extra": {
        "additionalProperties": False, "oneOf": [{"required": ["delta"]}, {"required": ["set"]}]}}

    delta: Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)] = None  # type: ignore[assignment]
    set: Count = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one(self):
        if (self.delta is None) == (self.set is None):
            raise ValueError("give exactly one of 'delta' or 'set'")
        return self


class ProductQuery(BaseModel):
    q: Annotated[str, Field(max_length=200, pattern=r"^[^\x00]*$")] | None = None
    category: Annotated[str, Field(max_length=100)] | None = None
    min_price: QueryPrice | None = None
    max_price: QueryPrice | None = None
    in_stock: bool | None = None
    sort: Literal[SORTS] = "newest"  # type: ignore[valid-type]
    page: Annotated[int, Field(ge=1, le=100_000)] = 1
    limit: Annotated[int, Field(ge=1, le=100)] = 20


def _stored(fields: dict) -> dict:
    """API field names to stored ones (money in minor units)."""
    if "price" in fields:
        fields["price_minor"] = fields.pop("price")
    return fields


class ProductsHandler(BaseHandler):
    openapi = {
        "get": {"summary": "Search the catalog (q, category, min_price, max_price, in_stock, sort, page, limit)",
                "query": ProductQuery, "auth": None},
        "post": {"summary": "Create a product (admin)", "body": ProductBody, "status": 201, "auth": "admin"},
    }

    async def get(self) -> None:
        query = self.parse_query(ProductQuery)
        items, total = await self.services.catalog.search(
            q=query.q, category=query.category, min_price=query.min_price, max_price=query.max_price,
            in_stock=query.in_stock, sort=query.sort, skip=(query.page - 1) * query.limit, limit=query.limit)
        self.send({"items": [public_product(p) for p in items], "page": query.page, "limit": query.limit, "total": total})

    async def post(self) -> None:
        self.require_admin()
        body = self.parse(ProductBody)
        product = await self.services.catalog.create(**_stored(body.model_dump()))
        self.send(public_product(product), 201)


class ProductHandler(BaseHandler):
    openapi = {
        "get": {"summary": "A product by id or slug; X-Channel-Seq is the seq of product:<id> to subscribe `since`",
                "auth": None},
        "patch": {"summary": "Change a product (admin)", "body": ProductPatch, "auth": "admin"},
        "delete": {"summary": "Remove a product from the catalog (admin); its orders stay readable", "status": 204, "auth": "admin"},
    }

    async def get(self, product_id: str) -> None:
        # The seq first: an event that lands between the two reads is replayed, never missed.
        seq = await self.services.realtime.current_seq(product_feed(product_id))
        product = await self.services.catalog.get(product_id)
        if product["_id"] != product_id:  # read by slug: now the id is known
            seq = await self.services.realtime.current_seq(product_feed(product["_id"]))
            product = await self.services.catalog.get(product["_id"])
        self.set_header("X-Channel-Seq", str(seq))
        self.send(public_product(product))

    async def patch(self, product_id: str) -> None:
        self.require_admin()
        changes = _stored(self.parse(ProductPatch).model_dump(exclude_unset=True))
        self.send(public_product(await self.services.catalog.update(product_id, changes)))

    async def delete(self, product_id: str) -> None:
        self.require_admin()
        await self.services.catalog.delete(product_id)
        self.set_status(204)
        self.finish()


class StockHandler(BaseHandler):
    openapi = {"post": {"summary": "Change stock by a delta or set it (admin)", "body": StockBody, "auth": "admin"}}

    async def post(self, product_id: str) -> None:
        self.require_admin()
        body = self.parse(StockBody)
        product = await self.services.catalog.change_stock(product_id, delta=body.delta, value=body.set)
        self.send(public_product(product))
