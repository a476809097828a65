"""Points expire first in, first out, once, with a points.expired event."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from domain.points import expiring

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def credit(entry_id, delta, days):
    return {"id": entry_id, "delta": delta, "expires_at": T0 + timedelta(days=days)}


def debit(entry_id, delta):
    return {"id": entry_id, "delta": -delta, "expires_at": None}


@pytest.mark.parametrize("entries, now_days, due, next_days", [
    ([credit("a", 10, 1)], 0, [], 1),
    ([credit("a", 10, 1)], 1, [("a", 10)], None),
    ([credit("a", 10, 1), credit("b", 5, 3), debit("s", 4)], 2, [("a", 6)], 3),  # spending uses the oldest first
    ([credit("a", 10, 1), credit("b", 5, 3), debit("s", 12)], 2, [], 3),          # a spent entirely, b has 3 left
    ([credit("a", 10, 1), credit("b", 5, 3), debit("s", 12)], 3, [("b", 3)], None),
    ([credit("a", 10, 1), {"id": "expire:a", "delta": -10, "expires_at": None}], 2, [], None),  # already expired
    ([credit("a", 10, 1), credit("b", 5, 1)], 1, [("a", 10), ("b", 5)], None),
])
def test_fifo_expiry_table(entries, now_days, due, next_days):
    got_due, got_next = expiring(entries, T0 + timedelta(days=now_days))
    assert got_due == due
    assert got_next == (None if next_days is None else T0 + timedelta(days=next_days))


@pytest.mark.stores
async def test_expiry_job_expires_what_is_left_once(api, hub_server, topics):
    hub = hub_server.hub
    user = await api.register()
    user_id = user["user"]["id"]
    await hub.services.points._apply(user_id, "awarded", 30, "order_paid", "award:o1", expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    await hub.services.points._apply(user_id, "awarded", 20, "order_paid", "award:o2", expires_at=datetime.now(timezone.utc) + timedelta(days=30))
    await hub.services.points._apply(user_id, "redeemed", -10, "redeemed", "redeem:r1")
    await hub.services.points.expire()
    await hub.services.points.expire()  # a second run (or another process) changes nothing
    points = (await api.call("GET", "/api/v1/users/me/points", token=user["access_token"])).data
    assert points["balance"] == 20
    expired = [e for e in points["entries"] if e["reason"] == "expired"]
    assert [(e["id"], e["delta"]) for e in expired] == [("expire:award:o1", -20)]
    events = await topics.read("points", until=lambda es: any(e["type"] == "points.expired" for e in es))
    expired_events = [e for e in events if e["type"] == "points.expired"]
    assert len(expired_events) == 1 and expired_events[0]["data"]["delta"] == -20 and expired_events[0]["data"]["balance"] == 20
    account = await hub.db["points_accounts"].find_one({"_id": user_id})
    assert account["next_expiry"] > datetime.now(timezone.utc) + timedelta(days=29)
