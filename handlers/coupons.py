"""Coupon endpoints (admin; CONTRACT v2 §5): /api/v1/coupons[/{code}]."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from domain.coupons import MAX_PER_USER, MAX_PRODUCTS, MAX_REDEMPTIONS, public_coupon
from handlers.base import ApiError, BaseHandler
from handlers.cart import CouponCode
from handlers.schemas import Body, Price

ProductId = Annotated[str, Field(min_length=1, max_length=64)]


# domain/coupons.py's rule for the value, by kind: a percentage more than 0 and at most 100,
# an amount more than 0 (both also prices: at most two decimals).
_PERCENT = {"anyOf": [
    {"type": "string", "pattern": r"^(0*[1-9][0-9]?(\.[0-9]{1,2})?|0+\.(0[1-9]|[1-9][0-9]?)|0*100(\.00?)?)$"},
    {"type": "number", "exclusiveMinimum": 0, "maximum": 100}]}
_AMOUNT = {"anyOf": [{"type": "string", "pattern": r"^(0*[1-9][0-9]*(\.[0-9]{1,2})?|0+\.(0[1-9]|[1-9][0-9]?))$"},
                     {"type": "number", "exclusiveMinimum": 0}]}


class CouponCreateBody(Body):
    model_config = ConfigDict(json_schema_extra={"additionalProperties": False, "oneOf": [
        {"properties": {"kind": {"const": "percent"}, "value": _PERCENT}},
        {"properties": {"kind": {"const": "amount"}, "value": _AMOUNT}}]})

    code: CouponCode
    kind: Literal["percent", "amount"]
    value: Price  # a percentage (up to 100, two decimals) for percent; an amount for amount
    max_discount: Price | None = None
    min_subtotal: Price | None = None
    max_redemptions: Annotated[StrictInt, Field(ge=1, le=MAX_REDEMPTIONS)] | None = None
    per_user_limit: Annotated[StrictInt, Field(ge=1, le=MAX_PER_USER)] = 1
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    product_ids: Annotated[list[ProductId], Field(max_length=MAX_PRODUCTS)] | None = None


class CouponPatchBody(Body):
    active: StrictBool


class ListQuery(BaseModel):
    active: bool | None = None
    page: Annotated[int, Field(ge=1, le=100_000)] = 1
    limit: Annotated[int, Field(ge=1, le=100)] = 20


def _code(code: str) -> str:
    if not 1 <= len(code) <= 40:
        raise ApiError(404, "coupon_not_found", "No such coupon.")
    return code


class CouponsHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Create a coupon (admin)", "body": CouponCreateBody, "status": 201, "auth": "admin"},
        "get": {"summary": "Coupons, newest first, with redemption counts (admin; active, page, limit)",
                "auth": "admin"},
    }

    async def post(self) -> None:
        self.require_admin()
        body = self.parse(CouponCreateBody)
        self.send(public_coupon(await self.services.coupons.create(body.model_dump())), 201)

    async def get(self) -> None:
        self.require_admin()
        query = self.parse_query(ListQuery)
        items, total = await self.services.coupons.list(active=query.active, skip=(query.page - 1) * query.limit,
                                                   limit=query.limit)
        self.send({"items": [public_coupon(c) for c in items], "page": query.page, "limit": query.limit,
                   "total": total})


class CouponHandler(BaseHandler):
    openapi = {
        "get": {"summary": "One coupon with its redemption count (admin)", "auth": "admin"},
        "patch": {"summary": "Deactivate (or reactivate) a coupon: {active} (admin)", "body": CouponPatchBody,
                  "auth": "admin"},
    }

    async def get(self, code: str) -> None:
        self.require_admin()
        self.send(public_coupon(await self.services.coupons.get(_code(code))))

    async def patch(self, code: str) -> None:
        self.require_admin()
        body = self.parse(CouponPatchBody)
        self.send(public_coupon(await self.services.coupons.set_active(_code(code), body.active)))
