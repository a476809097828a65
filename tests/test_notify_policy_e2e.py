"""The notification policy end to end (CONTRACT §2 "Notifications"): preferences,
do-not-disturb (held, released when the window ends, urgent bypass), frequency caps, held
work surviving a restart, and several hub processes sharing the work without double sends.

Real HTTP to an in-process hub, real SMTP to tests/peers.SmtpSink; wall-clock time (the
DND release test waits for a real window end, up to ~90 s).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from config.settings import load_settings
from hub.wiring.server import HubServer
from tests.conftest import SHARED_STORE
from tests.notify_e2e import extra_env, hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.notify_e2e import (Api, customer, deliveries, eventually, inbox, inbox_item, quietly,
                              request_notification)


TZ = "Asia/Kolkata"  # +05:30: a half-hour offset catches UTC-vs-local mix-ups


async def put_preferences(api, token, body) -> dict:
    r = await api.call("PUT", "/api/v1/users/me/preferences", body, token=token)
    assert r.status == 200, r
    return r.data


def hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M")


def dnd_now(tz: str = TZ) -> tuple[dict, datetime]:
    """A DND window that covers now (an hour either side) and the end it implies."""
    now = datetime.now(ZoneInfo(tz))
    end = (now + timedelta(hours=1)).replace(second=0, microsecond=0)
    return {"enabled": True, "start": hhmm(now - timedelta(hours=1)), "end": hhmm(end)}, end


def note(user_id: str, **extra) -> dict:
    return {"user_id": user_id, "type": "order_note", "title": "About your order", "body": "A word from the shop",
            **extra}


# Preferences --------------------------------------------------------------------------------

async def test_email_turned_off_is_suppressed_and_nothing_is_sent(api, sink):
    ann = await customer(api)
    await put_preferences(api, ann.token, {"channels": {"email": {"enabled": False, "types": ["all"]}}})
    r = await request_notification(api, note(ann.id))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "suppressed"))
    assert deliveries(item)["email"] == {**deliveries(item)["email"], "status": "suppressed", "reason": "preference"}
    assert deliveries(item)["websocket"]["status"] == "sent"
    await quietly(1.0, lambda: not sink.messages)


async def test_email_limited_to_other_types_is_suppressed(api, sink):
    ann = await customer(api)
    await put_preferences(api, ann.token, {"channels": {"email": {"enabled": True, "types": ["payment", "points_awarded"]}}})
    r = await request_notification(api, note(ann.id))  # category order
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "suppressed"))
    assert deliveries(item)["email"]["status"] == "suppressed"
    assert deliveries(item)["email"]["reason"] == "preference"

    # A type the preferences name does go out.
    r = await request_notification(api, note(ann.id, type="payment_reminder", title="Pay up"))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "suppressed"))
    assert deliveries(item)["email"]["status"] == "sent"
    [mail] = await sink.wait_for(1)
    assert mail["Subject"] == "Pay up"


# Do not disturb -----------------------------------------------------------------------------

async def test_dnd_holds_until_the_window_ends_and_urgent_bypasses(api, sink):
    ann = await customer(api, timezone=TZ)
    dnd, end = dnd_now()
    await put_preferences(api, ann.token, {"dnd": dnd})

    r = await request_notification(api, note(ann.id))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("held", "suppressed"))
    for channel in ("email", "websocket"):
        held = deliveries(item)[channel]
        assert held["status"] == "held" and held["reason"] == "dnd", held
        assert datetime.fromisoformat(held["until"]) == end  # the window's end, in the user's zone
        assert held["attempts"] == 0

    urgent = await request_notification(api, note(ann.id, title="Your card was used abroad", priority="urgent"))
    item = await inbox_item(api, ann.token, urgent.data["id"], settled=("sent", "suppressed"))
    assert deliveries(item)["email"]["status"] == "sent"
    [mail] = await sink.wait_for(1)
    assert mail["Subject"] == "Your card was used abroad"
    await quietly(1.5, lambda: len(sink.messages) == 1)  # the held one stays held
    item = await inbox_item(api, ann.token, r.data["id"])
    assert deliveries(item)["email"]["status"] == "held"


async def test_dnd_without_urgent_bypass_holds_urgent_too(api, sink):
    ann = await customer(api, timezone=TZ)
    dnd, _ = dnd_now()
    await put_preferences(api, ann.token, {"dnd": {**dnd, "urgent_bypass": False}})
    r = await request_notification(api, note(ann.id, priority="urgent"))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("held", "suppressed"))
    assert deliveries(item)["email"]["reason"] == "dnd"
    await quietly(1.0, lambda: not sink.messages)


@pytest.mark.timeout(180)
async def test_held_message_is_sent_when_the_dnd_window_ends(api, sink):
    """Real time: a window ending at the next minute boundary at least 30 s away."""
    ann = await customer(api, timezone=TZ)
    now = datetime.now(ZoneInfo(TZ))
    end = (now + timedelta(seconds=30)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    await put_preferences(api, ann.token, {"dnd": {"enabled": True, "start": hhmm(end - timedelta(hours=2)),
                                                   "end": hhmm(end)}})
    r = await request_notification(api, note(ann.id, title="Held until morning"))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("held", "suppressed"))
    assert datetime.fromisoformat(deliveries(item)["email"]["until"]) == end
    assert not sink.messages

    wait = (end - datetime.now(timezone.utc)).total_seconds()
    [mail] = await sink.wait_for(1, timeout=wait + 20)
    sent_at = datetime.now(timezone.utc)
    assert sent_at >= end, "sent before the window ended"
    assert mail["Subject"] == "Held until morning"
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "suppressed"))
    assert deliveries(item)["email"]["attempts"] == 1
    assert deliveries(item)["websocket"]["status"] == "sent"


# Frequency caps -----------------------------------------------------------------------------

async def test_frequency_cap_holds_the_third_normal_message_but_not_a_high_one(api, sink):
    ann = await customer(api)
    await put_preferences(api, ann.token, {"frequency": {"max_per_hour": 2, "max_per_day": 50}})
    ids = []
    for n in range(3):  # one after the other, so which one is third is certain
        r = await request_notification(api, note(ann.id, title=f"Normal {n}"))
        assert r.status == 202, r
        ids.append(r.data["id"])
        await inbox_item(api, ann.token, r.data["id"], settled=("sent", "held", "suppressed"))
    first, second, third = [await inbox_item(api, ann.token, nid) for nid in ids]
    assert deliveries(first)["email"]["status"] == deliveries(second)["email"]["status"] == "sent"
    capped = deliveries(third)["email"]
    assert capped["status"] == "held" and capped["reason"] == "frequency_cap", capped
    until = datetime.fromisoformat(capped["until"])
    assert timedelta(minutes=59) < until - datetime.now(timezone.utc) <= timedelta(hours=1)
    assert deliveries(third)["websocket"]["reason"] == "frequency_cap"  # counted once, across channels

    # A payment failure (high priority) is neither held nor counted.
    r = await request_notification(api, note(ann.id, type="payment_failed", title="Payment failed", priority="high"))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "held", "suppressed"))
    assert deliveries(item)["email"]["status"] == "sent"
    await sink.wait_for(3)
    await quietly(1.0, lambda: len(sink.messages) == 3)
    assert sorted(m["Subject"] for m in sink.messages) == ["Normal 0", "Normal 1", "Payment failed"]


# Restart ------------------------------------------------------------------------------------

@pytest.mark.stores
async def test_held_work_survives_a_restart_and_the_new_process_releases_it(hub_env, sink):
    """What this proves: a held delivery lives in the store (its job in
    `notification_jobs`), not in the memory of the process that held it; after that
    process stops, a new one on the same store claims the job once it is due and sends
    it, re-checking the policy first. Changing preferences alone releases nothing (the job
    waits for its due time). "Time passing" is simulated by moving the job's due time and
    the delivery's release time to now in MongoDB; the real wait is covered by
    test_held_message_is_sent_when_the_dnd_window_ends."""
    settings = load_settings(hub_env)
    shared = "MONGODB_URI" in hub_env
    first = HubServer(settings)
    await first.start()
    running = [first]
    try:
        api = Api(f"http://127.0.0.1:{first.port}")
        ann = await customer(api, timezone=TZ)
        dnd, end = dnd_now()
        await put_preferences(api, ann.token, {"dnd": dnd})
        r = await request_notification(api, note(ann.id, title="Survives restarts"))
        nid = r.data["id"]
        await inbox_item(api, ann.token, nid, settled=("held", "suppressed"))
        running.remove(first)
        await first.stop()

        # The same embedded store; a real one is reached with a new client (the first was closed).
        second = HubServer(settings, mongo_client=None if shared else first.hub.mongo_client)
        await second.start()
        running.append(second)
        api = Api(f"http://127.0.0.1:{second.port}")
        item = await inbox_item(api, ann.token, nid)
        assert deliveries(item)["email"]["status"] == "held"

        await put_preferences(api, ann.token, {"dnd": {**dnd, "enabled": False}})
        await quietly(2.5, lambda: not sink.messages)  # not a release: the job is due at the window's end

        store = second.hub.stores.notifications
        job = await store.jobs.find_one({"_id": nid})
        assert job is not None and job["held"] is True
        assert abs(job["due_at"] - end) < timedelta(seconds=1)
        now = datetime.now(timezone.utc)
        await store.col.update_one({"_id": nid}, {"$set": {"deliveries.email.release_at": now,
                                                          "deliveries.websocket.release_at": now}})
        await store.jobs.update_one({"_id": nid}, {"$set": {"due_at": now}})

        [mail] = await sink.wait_for(1, timeout=10)
        assert mail["Subject"] == "Survives restarts"
        item = await inbox_item(api, ann.token, nid, settled=("sent", "suppressed"))
        assert deliveries(item)["email"]["attempts"] == 1
        await eventually(lambda: _no_job(store, nid), 5, what="job removed")
    finally:
        if shared and running:
            await running[-1].hub.mongo_client.drop_database(hub_env["MONGODB_DB"])
        for server in running:
            await server.stop()


async def _no_job(store, nid) -> bool:
    return await store.jobs.find_one({"_id": nid}) is None


# Several processes --------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("mongo_uri", [SHARED_STORE], indirect=True)  # the embedded store is per process
# Every mail counted, each at its first attempt: a timeout well above a loaded machine's
# slowest answer, not the 1 s that makes the stall tests quick.
@pytest.mark.parametrize("extra_env", [{"HUB_PROVIDER_TIMEOUT_S": "10"}])
async def test_two_processes_share_the_work_without_double_sends(hub_env, sink):
    running = []
    try:
        for _ in range(2):
            server = HubServer(load_settings(hub_env))
            await server.start()
            running.append(server)
        apis = [Api(f"http://127.0.0.1:{server.port}") for server in running]
        users = [await customer(apis[n % 2]) for n in range(5)]
        for n in range(50):  # high priority: not held by the frequency caps
            user = users[n % 5]
            r = await request_notification(apis[n % 2], note(user.id, title=f"Message {n}", channels=["email"],
                                                             priority="high"))
            assert r.status == 202, r
        await sink.wait_for(50, timeout=60)
        await quietly(3.0, lambda: len(sink.messages) == 50)
        assert sorted(m["Subject"] for m in sink.messages) == sorted(f"Message {n}" for n in range(50))
        for user in users:
            items = (await inbox(apis[0], user.token))["items"]
            assert len(items) == 10
            assert all(deliveries(i)["email"]["status"] == "sent" and deliveries(i)["email"]["attempts"] == 1
                       for i in items)
    finally:
        if running:
            await running[0].hub.mongo_client.drop_database(hub_env["MONGODB_DB"])
        for server in running:
            await server.stop()
