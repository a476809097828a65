"""Shared set-up for the broadcast tests (tests/test_broadcasts.py, tests/test_unsubscribe.py):
many users stored at once (registering thousands over HTTP would spend minutes hashing
passwords; the broadcast path itself is exercised over HTTP, Kafka and SMTP), and helpers
to start and follow a broadcast."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from tests.notify_e2e import SERVICE_KEY, eventually

SERVICE = {"X-API-Key": SERVICE_KEY}


async def stored_users(hub, n: int, **fields) -> list[dict]:
    """`n` customers with an email address, written straight to the store."""
    now = datetime.now(timezone.utc)
    tag = uuid.uuid4().hex[:8]
    users = [{"_id": uuid.uuid4().hex, "email": f"u{i}-{tag}@example.com", "password_hash": "-", "name": f"User {i}",
              "phone": None, "timezone": "UTC", "locale": "en", "roles": ["customer"], "failed_logins": 0,
              "locked_until": None, "created_at": now, **fields} for i in range(n)]
    for start in range(0, n, 1000):
        await hub.stores.users.col.insert_many(users[start:start + 1000])
    return users


def dnd_now() -> dict:
    """A do-not-disturb window around now (UTC), so a message is held until it ends."""
    now = datetime.now(timezone.utc)
    return {"enabled": True, "start": (now - timedelta(hours=1)).strftime("%H:%M"),
            "end": (now + timedelta(hours=2)).strftime("%H:%M"), "timezone": "UTC", "urgent_bypass": True}


MARKETING_OFF = {"channels": {"email": {"enabled": True, "types": ["order", "payment", "points", "stock"]}}}


async def topic_with(api, key: str, user_ids: list[str]) -> None:
    r = await api.call("PUT", f"/api/v1/topics/{key}", {"name": key}, headers=SERVICE)
    assert r.status == 200, r
    for start in range(0, len(user_ids), 10_000):
        r = await api.call("POST", f"/api/v1/topics/{key}/subscribers", {"user_ids": user_ids[start:start + 10_000]},
                           headers=SERVICE)
        assert r.status == 200 and not r.data["unknown"], r


def announcement(audience: dict, **extra) -> dict:
    return {"audience": audience, "type": "flash_sale", "category": "marketing", "title": "Flash sale",
            "body": "Everything 30% off today", "channels": ["email", "websocket"], **extra}


async def start_broadcast(api, body: dict, key: str | None = None) -> str:
    headers = dict(SERVICE, **({"Idempotency-Key": key} if key else {}))
    r = await api.call("POST", "/api/v1/broadcasts", body, headers=headers)
    assert r.status == 202, r
    return r.data["id"]


async def progress(api, broadcast_id: str) -> dict:
    r = await api.call("GET", f"/api/v1/broadcasts/{broadcast_id}", headers=SERVICE)
    assert r.status == 200, r
    return r.data


async def finished(api, broadcast_id: str, timeout: float = 120, status: str = "done") -> dict:
    async def probe():
        data = await progress(api, broadcast_id)
        assert data["status"] == status, data
        return data
    return await eventually(probe, timeout, interval=0.25, what=f"broadcast {status}")
