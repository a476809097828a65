"""Order endpoints: /api/v1/orders[/{id}[/cancel|/transitions]]."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from domain.feeds import order_feed
from domain.orders import MAX_LINES, MAX_QUANTITY, STATUSES, public_order
from handlers.base import ApiError, BaseHandler
from handlers.cart import CouponCode, Points
from handlers.schemas import Body

ProductId = Annotated[str, Field(min_length=1, max_length=64)]
AddressLine = Annotated[str, Field(min_length=1, max_length=200)]


class OrderLine(Body):
    product_id: ProductId
    # HUB_MAX_LINE_QUANTITY narrows this (the OpenAPI document shows the setting).
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]


class ShippingAddress(Body):
    name: AddressLine | None = None
    line1: AddressLine | None = None
    line2: AddressLine | None = None
    city: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    region: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    postal_code: Annotated[str, Field(min_length=1, max_length=20)] | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")] | None = None
    phone: Annotated[str, Field(min_length=1, max_length=32)] | None = None


class OrderBody(Body):
    # Exactly one of items and from_cart: true (the handler checks it; the document says it).
    model_config = ConfigDict(json_schema_extra={"additionalProperties": False, "oneOf": [
        {"required": ["items"], "properties": {"items": {"type": "array"}, "from_cart": {"const": False}}},
        {"required": ["from_cart"], "properties": {"items": {"type": "null"}, "from_cart": {"const": True}}}]})

    items: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_LINES)] | None = None
    # A typed address (only its known fields are kept) or one free-text line.
    shipping_address: ShippingAddress | Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    note: Annotated[str, Field(max_length=1000)] | None = None
    # CONTRACT v2 §5: the items of the caller's cart (with its coupon and points unless given here).
    from_cart: StrictBool = False
    coupon_code: CouponCode | None = None
    points: Points | None = None


class CancelBody(Body):
    reason: Annotated[str, Field(max_length=500)] | None = None


class TransitionBody(Body):
    status: Literal[tuple(sorted(STATUSES))]  # type: ignore[valid-type]
    note: Annotated[str, Field(max_length=500)] | None = None


class ListQuery(BaseModel):
    status: Literal[tuple(sorted(STATUSES))] | None = None  # type: ignore[valid-type]
    user_id: Annotated[str, Field(max_length=64)] | None = None
    page: Annotated[int, Field(ge=1, le=100_000)] = 1
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class OrdersHandler(BaseHandler):
    openapi = {
        "post": {"summary": "Place an order (optional Idempotency-Key header)", "body": OrderBody, "status": 201, "auth": "user"},
        "get": {"summary": "Own orders, newest first (admins: all; status, user_id, page, limit)", "query": ListQuery,
                "auth": "user"},
    }

    async def post(self) -> None:
        caller = self.require_user()
        settings = self.config
        await self.services.rate_limiter.hit(f"orders-user:{caller.id}", settings.order_rate_per_user)
        body = self.parse(OrderBody)
        address = body.shipping_address
        if isinstance(address, ShippingAddress):
            address = address.model_dump(exclude_none=True)
        key = self.request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 255:
            raise ApiError(422, "validation_failed", "Idempotency-Key must be 1 to 255 characters.",
                           [{"field": "Idempotency-Key", "message": "1 to 255 characters"}])
        if (body.items is None) == (not body.from_cart):
            raise ApiError(422, "validation_failed", "Send either items or from_cart: true.",
                           [{"field": "items", "message": "required unless from_cart is true, and not with it"}])
        coupon_code, points, cart_version = body.coupon_code, body.points, None
        if body.from_cart:
            items, cart_coupon, cart_points, cart_version = await self.services.carts.for_order(caller.id)
            coupon_code = coupon_code if "coupon_code" in body.model_fields_set else cart_coupon
            points = cart_points if points is None else points
        else:
            items = [(line.product_id, line.quantity) for line in body.items]
        too_many = [{"field": f"items.{n}.quantity", "message": f"at most {settings.max_line_quantity}"}
                    for n, (_, quantity) in enumerate(items) if quantity > settings.max_line_quantity]
        if too_many:
            raise ApiError(422, "validation_failed", "Some quantities are too large.", too_many)
        order, created = await self.services.orders.place(
            caller.id, items, shipping_address=address, note=body.note, idempotency_key=key,
            coupon_code=coupon_code, points=points or 0, from_cart=body.from_cart)
        if cart_version is not None and created:
            await self.services.carts.ordered(caller.id, cart_version)
        if not created:
            self.set_header("Idempotent-Replayed", "true")
        self.send(public_order(order), 201)

    async def get(self) -> None:
        caller = self.caller or self.require_user()
        query = self.parse_query(ListQuery)
        items, total = await self.services.orders.list_for(
            caller, user_id=query.user_id, status=query.status, skip=(query.page - 1) * query.limit, limit=query.limit)
        self.send({"items": [public_order(o) for o in items], "page": query.page, "limit": query.limit, "total": total})


class OrderHandler(BaseHandler):
    openapi = {"get": {"summary": "One order (owner or admin; otherwise 404); X-Channel-Seq is the seq of "
                                  "order:<id> to subscribe `since`", "auth": "user"}}

    async def get(self, order_id: str) -> None:
        caller = self.caller or self.require_user()
        # The seq first: an event that lands between the two reads is replayed, never missed.
        seq = await self.services.realtime.current_seq(order_feed(order_id))
        order = await self.services.orders.visible(order_id, caller)
        self.set_header("X-Channel-Seq", str(seq))
        self.send(public_order(order))


class CancelHandler(BaseHandler):
    openapi = {"post": {"summary": "Cancel (owner while pending/confirmed; admin per the table); stock comes back, "
                                   "and a paid order's payment is refunded (docs/payments.md)",
                        "body": CancelBody, "auth": "user"}}

    async def post(self, order_id: str) -> None:
        caller = self.caller or self.require_user()
        body = self.parse(CancelBody) if self.body() else CancelBody()
        self.send(public_order(await self.services.orders.cancel(order_id, caller, body.reason)))


class TransitionHandler(BaseHandler):
    openapi = {"post": {"summary": "Move an order to another status (admin)", "body": TransitionBody, "auth": "admin"}}

    async def post(self, order_id: str) -> None:
        caller = self.require_admin()
        body = self.parse(TransitionBody)
        order = await self.services.orders.visible(order_id, caller)
        self.send(public_order(await self.services.orders.transition(order, body.status, note=body.note, actor=caller.id)))
