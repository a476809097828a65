"""Cart endpoints (CONTRACT v2 §5): /api/v1/users/me/cart[/items/{product_id}|/coupon|/points]."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt

from domain.orders import MAX_QUANTITY
from handlers.base import BaseHandler
from handlers.schemas import Body

CouponCode = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^\s*[A-Za-z0-9_-]+\s*$")]
Points = Annotated[StrictInt, Field(ge=0, le=1_000_000_000)]


class ItemBody(Body):
    quantity: Annotated[StrictInt, Field(ge=0, le=MAX_QUANTITY)]


class CouponBody(Body):
    code: CouponCode


class PointsBody(Body):
    points: Points


class CartHandler(BaseHandler):
    openapi = {
        "get": {"summary": "The caller's cart at live prices and stock, with its coupon and points", "auth": "user"},
        "delete": {"summary": "Empty the caller's cart", "auth": "user"},
    }

    async def get(self) -> None:
        self.send(await self.services.carts.view(self.require_user().id))

    async def delete(self) -> None:
        self.send(await self.services.carts.clear(self.require_user().id))


class CartItemHandler(BaseHandler):
    openapi = {"put": {"summary": "Set a product's quantity in the cart (0 removes it)", "body": ItemBody,
                       "auth": "user"}}

    async def put(self, product_id: str) -> None:
        caller = self.require_user()
        body = self.parse(ItemBody)
        # The path bounds the id (BaseHandler.prepare); an id naming no product is refused
        # as unknown_product (removing it is a no-op), whatever its length.
        self.send(await self.services.carts.set_item(caller.id, product_id, body.quantity))


class CartCouponHandler(BaseHandler):
    openapi = {
        "put": {"summary": "Apply a coupon to the cart (422 coupon_invalid with details.reason)", "body": CouponBody,
                "auth": "user"},
        "delete": {"summary": "Remove the cart's coupon", "auth": "user"},
    }

    async def put(self) -> None:
        caller = self.require_user()
        body = self.parse(CouponBody)
        self.send(await self.services.carts.set_coupon(caller.id, body.code))

    async def delete(self) -> None:
        self.send(await self.services.carts.remove_coupon(self.require_user().id))


class CartPointsHandler(BaseHandler):
    openapi = {"put": {"summary": "Points the caller means to spend on the cart (bounded by balance and total "
                                  "when shown and ordered)", "body": PointsBody, "auth": "user"}}

    async def put(self) -> None:
        caller = self.require_user()
        body = self.parse(PointsBody)
        self.send(await self.services.carts.set_points(caller.id, body.points))
