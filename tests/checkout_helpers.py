"""Helpers shared by the cart, coupon, checkout-points and reminder tests (over real HTTP)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.conftest import SERVICE_KEY, Api, KafkaTopics

O = "/api/v1/orders"
CART = "/api/v1/users/me/cart"
COUPONS = "/api/v1/coupons"
POINTS = "/api/v1/users/me/points"


def cents(amount: str) -> int:
    return int(Decimal(amount) * 100)


async def coupon(api: Api, admin: str, **fields) -> dict:
    r = await api.call("POST", COUPONS, fields, token=admin)
    assert r.status == 201, r
    return r.data


async def coupon_of(api: Api, admin: str, code: str) -> dict:
    r = await api.call("GET", f"{COUPONS}/{code}", token=admin)
    assert r.status == 200, r
    return r.data


async def stock(api: Api, product_id: str) -> int:
    r = await api.call("GET", f"/api/v1/products/{product_id}")
    assert r.status == 200, r
    return r.data["stock"]


async def order(api: Api, token: str, *lines, key: str | None = None, **extra):
    body = {"items": [{"product_id": p, "quantity": q} for p, q in lines], **extra} if lines else extra
    return await api.call("POST", O, body, token=token, headers={"Idempotency-Key": key} if key else None)


async def balance(api: Api, token: str) -> int:
    r = await api.call("GET", POINTS, token=token)
    assert r.status == 200, r
    return r.data["balance"]


async def give_points(api: Api, user_id: str, token: str, points: int, timeout: float = 15.0) -> None:
    """A marketing service's points.awarded through POST /api/v1/events; waits for the credit."""
    before = await balance(api, token)
    event = {"specversion": "1.0", "id": f"bonus-{user_id}-{before}", "source": "/marketing",
             "type": "points.awarded", "datacontenttype": "application/json",
             "data": {"user_id": user_id, "delta": points, "reason": "welcome bonus"}}
    r = await api.call("POST", "/api/v1/events", event, headers={"X-API-Key": SERVICE_KEY})
    assert r.status == 202, r
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await balance(api, token) != before + points:
        assert loop.time() < deadline, "points.awarded was not credited"
        await asyncio.sleep(0.1)


async def kafka_events(hub, topic: str, *, until=lambda events: False, timeout: float = 10.0) -> list[dict]:
    return await KafkaTopics(hub).read(topic, until=until, timeout=timeout)


def of_type(events: list[dict], event_type: str, **data) -> list[dict]:
    return [e for e in events if e.get("type") == event_type
            and all(e.get("data", {}).get(k) == v for k, v in data.items())]
