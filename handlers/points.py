"""Points endpoints: the balance and ledger, and the points mall."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt

from domain.points import public_redemption
from handlers.base import BaseHandler
from handlers.schemas import Body


class RedemptionBody(Body):
    product_id: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[StrictInt, Field(ge=1, le=100)] = 1


class PointsHandler(BaseHandler):
    openapi = {"get": {"summary": "The caller's points balance and ledger, newest first", "auth": "user"}}

    async def get(self) -> None:
        caller = self.require_user()
        self.send(await self.services.points.summary(caller.id))


class RedemptionsHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Buy a product with points (409 insufficient_points or out_of_stock)",
                 "body": RedemptionBody, "status": 201, "auth": "user"},
        "get": {"summary": "The caller's completed redemptions", "auth": "user"},
    }

    async def post(self) -> None:
        caller = self.require_user()
        body = self.parse(RedemptionBody)
        redemption, balance = await self.services.points.redeem(caller.id, body.product_id, body.quantity)
        self.send({"redemption": public_redemption(redemption), "balance": balance}, 201)

    async def get(self) -> None:
        caller = self.require_user()
        self.send({"items": [public_redemption(r) for r in await self.services.points.redemptions(caller.id)]})
