"""The notification engine end to end, in process (domain/notifications.Notifier): real
stores (each document store, in a database of its own: tests/conftest.py), real frequency caps on Redis (the local server when it answers, else the
in-process stand-in), real templates, fake channels that record what they are given and
fail on demand, and a clock the test moves.

It is driven the way hub/workers/notify_dispatcher.py drives it: `record(event)`, then `process`
of each notification recorded with work; later, the due jobs are claimed and processed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from fakeredis import FakeAsyncRedis
from pymongo import AsyncMongoClient

from domain.delivery import Channel, PermanentError, Sent, TransientError
from domain.events import Rejected
from domain.notification_templates import Templates
from domain.notifications import LEASE, Notifier, public_notification
from domain.users import public_user
from hub.adapters.frequency_caps import FrequencyCaps
from hub.adapters.embedded_mongo import embedded_client
from hub.stores.notifications import NotificationStore
from hub.stores.stock_alerts import StockAlertStore
from hub.stores.templates import TemplateStore
from hub.stores.users import UserStore
from tests.conftest import REDIS_URL

pytestmark = [pytest.mark.stores]

# 23:00 in Paris (CEST, UTC+2) on 10 June 2026: inside a 22:00-08:00 window, which ends at
# 06:00 UTC the next morning.
T0 = datetime(2026, 6, 10, 21, 0, tzinfo=timezone.utc)
DND_END = datetime(2026, 6, 11, 6, 0, tzinfo=timezone.utc)
DND = {"dnd": {"enabled": True, "start": "22:00", "end": "08:00", "timezone": None, "urgent_bypass": True}}
RETRY_BASE_S = 40


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class FakeChannel(Channel):
    """Records every message it is given; `script` holds the outcome of the next calls
    (an exception to raise, or None to accept), `failing` an exception per address."""

    def __init__(self, name: str, *, delivered: bool = False, clock=None) -> None:
        self.name = name
        self.delivered = delivered
        self.clock = clock
        self.calls = []     # every message it was asked to send
        self.sent = []      # those it accepted
        self.sent_at = []   # and when (by the test's clock)
        self.script = []
        self.failing = {}

    async def send(self, message):
        self.calls.append(message)
        outcome = self.script.pop(0) if self.script else None
        key = message.address["endpoint"] if isinstance(message.address, dict) else message.address
        outcome = outcome or self.failing.get(key)
        if outcome is not None:
            raise outcome
        self.sent.append(message)
        self.sent_at.append(self.clock() if self.clock else None)
        return Sent(provider_id=f"{self.name}-{len(self.sent)}", delivered=self.delivered)


class FakeProducts:
    def __init__(self, *products) -> None:
        self.products = {p["_id"]: p for p in products}

    async def get(self, product_id):
        return self.products.get(product_id)


class Hub:
    """The engine and what it stands on, for one test."""

    def __init__(self, db, redis, prefix: str) -> None:
        self.db, self.redis, self.prefix = db, redis, prefix
        self.clock = Clock(T0)
        self.store = NotificationStore(db)
        self.users = UserStore(db)
        self.alerts = StockAlertStore(db)
        self.template_store = TemplateStore(db)
        self.templates = Templates(self.template_store)
        self.caps = FrequencyCaps(redis, prefix)
        self.products = FakeProducts({"_id": "p-1", "name": "Blue Kettle", "slug": "blue-kettle"})
        self.channels = {name: FakeChannel(name, clock=self.clock) for name in ("email", "sms", "push", "websocket")}
        self.recorded = []
        self.notifier = self.make_notifier()

    def make_notifier(self, *, channels=None, max_attempts: int = 3, retry_base_s: float = RETRY_BASE_S,
                      jitter=lambda: 0.5, source: str | None = None) -> Notifier:  # 0.5: no jitter
        return Notifier(self.store, self.users, self.products, self.alerts, self.templates, self.caps,
                        self.channels if channels is None else channels, clock=self.clock,
                        retry_base_s=retry_base_s, max_attempts=max_attempts, on_recorded=self.recorded.append,
                        jitter=jitter, source=source)

    async def setup(self) -> None:
        for store in (self.store, self.users, self.alerts, self.template_store):
            await store.create_indexes()

    async def user(self, **fields) -> dict:
        user_id = uuid.uuid4().hex
        doc = {"_id": user_id, "email": f"{user_id[:10]}@example.com", "password_hash": "x", "roles": ["customer"],
               "name": "Ada", "locale": "en", "timezone": "Europe/Paris", "phone": None,
               "push_subscriptions": [subscription("phone")], "failed_logins": 0, "locked_until": None,
               "created_at": T0}
        doc.update(fields)
        await self.users.insert(doc)
        return doc

    async def set_preferences(self, user_id: str, preferences: dict) -> None:
        await self.users.update_profile(user_id, {"preferences": preferences})

    async def notify(self, event: dict) -> list[str]:
        """What hub-notify and the dispatcher do: record, then process what was recorded."""
        before = len(self.recorded)
        ids = await self.notifier.record(event)
        for nid in self.recorded[before:]:
            await self.notifier.process_many([nid])
        return ids

    async def run_due(self) -> list[str]:
        """What the dispatcher's poll does once: claim the due jobs and process them."""
        now = self.clock()
        ran = []
        for nid in await self.store.due_jobs(now, 100):
            if await self.store.claim(nid, now, now + LEASE):
                await self.notifier.process_many([nid])
                ran.append(nid)
        return ran

    async def deliveries(self, nid: str) -> dict:
        return (await self.store.get(nid))["deliveries"]

    async def statuses(self, nid: str) -> dict:
        return {c: (d["status"], d.get("reason")) for c, d in (await self.deliveries(nid)).items()}

    async def job(self, nid: str) -> dict | None:
        return await self.store.jobs.find_one({"_id": nid})

    def received(self, channel: str, nid: str | None = None) -> list:
        return [m for m in self.channels[channel].sent if nid is None or m.notification_id == nid]


def subscription(name: str) -> dict:
    return {"endpoint": f"https://push.example/{name}", "keys": {"p256dh": "k", "auth": "a"}}


def event(event_type: str, data: dict, *, event_id: str | None = None, subject: str | None = None) -> dict:
    return {"specversion": "1.0", "id": event_id or uuid.uuid4().hex, "source": "test", "type": event_type,
            "time": "2026-06-10T21:00:00Z", "subject": subject, "datacontenttype": "application/json", "data": data}


def order_event(user_id: str, event_type: str = "order.shipped", number: str = "HUB-20260042", **kw) -> dict:
    return event(event_type, {"order_id": f"o-{number}", "number": number, "user_id": user_id,
                              "status": event_type.split(".")[1], "total": "59.90", "currency": "EUR"}, **kw)


def payment_failed(user_id: str) -> dict:
    return event("payment.failed", {"order_id": "o-1", "number": "HUB-20260042", "user_id": user_id,
                                    "amount": "59.90", "currency": "EUR", "provider": "stripe", "payment_id": "pi_1"})


def requested(user_id: str, **fields) -> dict:
    return event("notification.requested", {"user_id": user_id, "type": "order_delayed", "title": "Your order is late",
                                            "body": "It will arrive tomorrow.", **fields})


@pytest.fixture
async def hub(mongo_uri):
    database = f"hub_notifier_test_{uuid.uuid4().hex[:12]}"
    client = AsyncMongoClient(mongo_uri, tz_aware=True) if mongo_uri else embedded_client()
    redis = aioredis.from_url(REDIS_URL, decode_responses=True) if REDIS_URL else FakeAsyncRedis(decode_responses=True)
    h = Hub(client[database], redis, prefix=f"test-notifier-{uuid.uuid4().hex[:12]}:")
    await h.setup()
    yield h

    async def teardown():
        keys = [key async for key in redis.scan_iter(f"{h.prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await client.drop_database(database)
        await client.close()
    await teardown()


# Routing --------------------------------------------------------------------------------------

async def test_default_preferences_reach_email_push_and_websocket(hub):
    user = await hub.user()
    nid, = await hub.notify(order_event(user["_id"]))
    assert await hub.statuses(nid) == {"email": ("sent", None), "sms": ("suppressed", "preference"),
                                       "push": ("sent", None), "websocket": ("sent", None)}
    deliveries = await hub.deliveries(nid)
    assert all(deliveries[c]["attempts"] == 1 for c in ("email", "push", "websocket"))
    assert deliveries["sms"]["attempts"] == 0
    assert deliveries["email"]["provider_id"] == "email-1"
    email, = hub.received("email")
    assert email.address == user["email"] and email.notification_id == nid and email.user_id == user["_id"]
    assert email.content["subject"] == "Order HUB-20260042 shipped"
    assert "HUB-20260042" in email.content["text"] and "HUB-20260042" in email.content["html"]
    push, = hub.received("push")
    assert push.address == subscription("phone")
    assert push.content == {"title": "Order HUB-20260042 shipped", "body": "Your order HUB-20260042 is on its way."}
    assert push.topic == "order-o-HUB-20260042" and push.priority == "normal" and push.type == "order_shipped"
    ws, = hub.received("websocket")
    assert ws.address == user["_id"] and ws.content == push.content
    assert hub.channels["sms"].calls == []
    # The inbox holds the in-app rendering, and nothing is left to do.
    doc = await hub.store.get(nid)
    assert (doc["title"], doc["body"]) == (push.content["title"], push.content["body"])
    assert doc["user_id"] == user["_id"] and doc["read_at"] is None
    assert await hub.job(nid) is None


async def test_a_live_socket_that_takes_the_message_marks_it_delivered(hub):
    hub.channels["websocket"].delivered = True
    user = await hub.user()
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["websocket"] == ("delivered", None)


async def test_sms_needs_the_preference_and_a_phone(hub):
    sms_on = {"channels": {"sms": {"enabled": True, "types": ["all"]}}}
    without_phone = await hub.user(preferences=sms_on)
    nid, = await hub.notify(order_event(without_phone["_id"]))
    assert (await hub.statuses(nid))["sms"] == ("suppressed", "no_address")
    with_phone = await hub.user(preferences=sms_on, phone="+33612345678")
    nid, = await hub.notify(payment_failed(with_phone["_id"]))
    assert (await hub.statuses(nid))["sms"] == ("sent", None)
    sms, = hub.received("sms")
    assert sms.address == "+33612345678"
    assert sms.content["text"] == ("Payment failed: Your payment of 59.90 EUR for order HUB-20260042 did not go "
                                   "through. Please try again with another card.")
    # A longer text is cut to one segment.
    nid, = await hub.notify(requested(with_phone["_id"], body="Your parcel is late. " * 12, channels=["sms"]))
    assert await hub.statuses(nid) == {"sms": ("sent", None)}
    text = hub.received("sms")[-1].content["text"]
    assert text.startswith("Your order is late: Your parcel is late. ") and text.endswith("...")
    assert len(text) <= 160


async def test_a_channel_not_configured_is_off_before_anything_else(hub):
    notifier = hub.make_notifier(channels={"websocket": hub.channels["websocket"]})
    user = await hub.user(preferences={"channels": {"sms": {"enabled": True, "types": ["all"]}}}, phone="+3361")
    nid, = await notifier.record(order_event(user["_id"]))
    await notifier.process_many([nid])
    assert await hub.statuses(nid) == {"email": ("suppressed", "channel_off"), "sms": ("suppressed", "channel_off"),
                                       "push": ("suppressed", "channel_off"), "websocket": ("sent", None)}
    assert [len(hub.received(c)) for c in ("email", "sms", "push", "websocket")] == [0, 0, 0, 1]


async def test_missing_addresses(hub):
    user = await hub.user(email=None, push_subscriptions=[])
    nid, = await hub.notify(order_event(user["_id"]))
    assert await hub.statuses(nid) == {"email": ("suppressed", "no_address"), "sms": ("suppressed", "preference"),
                                       "push": ("suppressed", "no_address"), "websocket": ("sent", None)}


async def test_preferences_by_type_category_and_all(hub):
    user = await hub.user(preferences={"channels": {
        "email": {"enabled": True, "types": ["order_shipped"]},
        "push": {"enabled": True, "types": ["payment"]},
        "websocket": {"enabled": True, "types": ["all"]},
    }})
    shipped, = await hub.notify(order_event(user["_id"]))
    created, = await hub.notify(order_event(user["_id"], "order.created"))
    failed, = await hub.notify(payment_failed(user["_id"]))
    assert await hub.statuses(shipped) == {"email": ("sent", None), "sms": ("suppressed", "preference"),
                                           "push": ("suppressed", "preference"), "websocket": ("sent", None)}
    assert await hub.statuses(created) == {"email": ("suppressed", "preference"), "sms": ("suppressed", "preference"),
                                           "push": ("suppressed", "preference"), "websocket": ("sent", None)}
    assert await hub.statuses(failed) == {"email": ("suppressed", "preference"), "sms": ("suppressed", "preference"),
                                          "push": ("sent", None), "websocket": ("sent", None)}
    assert [m.notification_id for m in hub.received("email")] == [shipped]
    assert [m.notification_id for m in hub.received("push")] == [failed]
    assert len(hub.received("websocket")) == 3


async def test_a_channel_switched_off_suppresses_every_type(hub):
    user = await hub.user(preferences={"channels": {"email": {"enabled": False, "types": ["all"]}}})
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["email"] == ("suppressed", "preference")
    assert hub.received("email") == []


async def test_a_requested_notification_goes_to_the_channels_it_names(hub):
    user = await hub.user()
    nid, = await hub.notify(requested(user["_id"], channels=["push"], data={"order_id": "o-9"}))
    assert await hub.statuses(nid) == {"push": ("sent", None)}
    push, = hub.received("push")
    assert push.content == {"title": "Your order is late", "body": "It will arrive tomorrow."}
    assert push.data == {"order_id": "o-9"}
    doc = await hub.store.get(nid)
    assert doc["category"] == "order" and doc["title"] == "Your order is late"


# Do not disturb -------------------------------------------------------------------------------

async def test_dnd_holds_until_the_window_ends_then_sends(hub):
    user = await hub.user(preferences=DND)
    nid, = await hub.notify(order_event(user["_id"]))
    deliveries = await hub.deliveries(nid)
    for channel in ("email", "push", "websocket"):
        assert (deliveries[channel]["status"], deliveries[channel]["reason"]) == ("held", "dnd")
        assert deliveries[channel]["release_at"] == DND_END  # 08:00 in Paris
        assert deliveries[channel]["attempts"] == 0
    assert deliveries["sms"]["status"] == "suppressed"
    assert all(hub.channels[c].calls == [] for c in hub.channels)
    job = await hub.job(nid)
    assert job["due_at"] == DND_END and job["held"] is True
    assert await hub.store.held_count() == 1
    # What the user sees in the inbox: held, and until when.
    public = {d["channel"]: d for d in public_notification(await hub.store.get(nid))["deliveries"]}
    assert public["push"]["status"] == "held" and public["push"]["reason"] == "dnd"
    assert datetime.fromisoformat(public["push"]["until"]) == DND_END
    # Not before the end.
    hub.clock.now = DND_END - timedelta(seconds=1)
    assert await hub.run_due() == []
    assert all(hub.channels[c].calls == [] for c in hub.channels)
    hub.clock.now = DND_END
    assert await hub.run_due() == [nid]
    assert await hub.statuses(nid) == {"email": ("sent", None), "sms": ("suppressed", "preference"),
                                       "push": ("sent", None), "websocket": ("sent", None)}
    assert (await hub.deliveries(nid))["push"]["at"] == DND_END
    assert len(hub.received("email")) == len(hub.received("push")) == len(hub.received("websocket")) == 1
    assert await hub.job(nid) is None and await hub.store.held_count() == 0


async def test_dnd_follows_the_dnd_time_zone_over_the_users(hub):
    user = await hub.user(timezone="Europe/Paris",
                          preferences={"dnd": dict(DND["dnd"], timezone="America/New_York")})  # 17:00 there
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["push"] == ("sent", None)


async def test_urgent_bypasses_dnd_but_not_without_bypass(hub):
    user = await hub.user(preferences=DND)
    urgent, = await hub.notify(requested(user["_id"], priority="urgent"))
    normal, = await hub.notify(requested(user["_id"], priority="normal"))
    high, = await hub.notify(payment_failed(user["_id"]))
    assert (await hub.statuses(urgent))["push"] == ("sent", None)
    assert (await hub.statuses(normal))["push"] == ("held", "dnd")
    assert (await hub.statuses(high))["push"] == ("held", "dnd")  # high skips the caps, not the night
    assert [m.notification_id for m in hub.received("push")] == [urgent]
    assert hub.received("push")[0].priority == "urgent"

    strict = await hub.user(preferences={"dnd": dict(DND["dnd"], urgent_bypass=False)})
    held, = await hub.notify(requested(strict["_id"], priority="urgent"))
    assert (await hub.statuses(held))["push"] == ("held", "dnd")
    assert (await hub.deliveries(held))["push"]["release_at"] == DND_END


async def test_preferences_changed_while_held_apply_at_release(hub):
    user = await hub.user(preferences=DND)
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["email"] == ("held", "dnd")
    await hub.set_preferences(user["_id"], dict(DND, channels={"email": {"enabled": False, "types": ["all"]}}))
    hub.clock.now = DND_END
    await hub.run_due()
    assert await hub.statuses(nid) == {"email": ("suppressed", "preference"), "sms": ("suppressed", "preference"),
                                       "push": ("sent", None), "websocket": ("sent", None)}
    assert hub.channels["email"].calls == []
    assert await hub.job(nid) is None


async def test_dnd_turned_off_while_held_still_waits_for_the_release_then_sends(hub):
    user = await hub.user(preferences=DND)
    nid, = await hub.notify(order_event(user["_id"]))
    await hub.set_preferences(user["_id"], {})
    hub.clock.advance(hours=1)
    assert await hub.run_due() == []  # the job is due at the end of the window it was held in
    await hub.notifier.process_many([nid])   # and a stray dispatch before then releases nothing early
    assert (await hub.statuses(nid))["push"] == ("held", "dnd")
    assert (await hub.deliveries(nid))["push"]["release_at"] == DND_END
    assert hub.channels["push"].calls == []
    hub.clock.now = DND_END
    await hub.run_due()
    assert (await hub.statuses(nid))["push"] == ("sent", None)


# Frequency caps -------------------------------------------------------------------------------

async def test_over_the_hourly_cap_a_message_waits_for_the_oldest_to_age_out(hub):
    user = await hub.user(preferences={"frequency": {"max_per_hour": 2, "max_per_day": 50}})
    first, = await hub.notify(order_event(user["_id"], number="HUB-1"))
    hub.clock.advance(minutes=1)
    second, = await hub.notify(order_event(user["_id"], number="HUB-2"))
    hub.clock.advance(minutes=1)
    third, = await hub.notify(order_event(user["_id"], number="HUB-3"))
    for nid in (first, second):
        assert (await hub.statuses(nid))["push"] == ("sent", None)
    released = T0 + timedelta(hours=1)  # when the first ages out of the hour
    deliveries = await hub.deliveries(third)
    for channel in ("email", "push", "websocket"):
        assert (deliveries[channel]["status"], deliveries[channel]["reason"]) == ("held", "frequency_cap")
        assert deliveries[channel]["release_at"] == released
    assert (await hub.job(third))["due_at"] == released
    assert [m.notification_id for m in hub.received("push")] == [first, second]

    # A high-priority message goes through, and is not counted.
    hub.clock.advance(minutes=1)
    failed, = await hub.notify(payment_failed(user["_id"]))
    assert (await hub.statuses(failed))["push"] == ("sent", None)

    hub.clock.now = released - timedelta(seconds=1)
    assert await hub.run_due() == []
    hub.clock.now = released
    assert await hub.run_due() == [third]
    assert (await hub.statuses(third))["push"] == ("sent", None)
    assert [m.notification_id for m in hub.received("push")] == [first, second, failed, third]
    assert await hub.job(third) is None


async def test_high_priority_messages_are_not_counted(hub):
    user = await hub.user(preferences={"frequency": {"max_per_hour": 2, "max_per_day": 50}})
    for _ in range(3):
        nid, = await hub.notify(payment_failed(user["_id"]))
        assert (await hub.statuses(nid))["push"] == ("sent", None)
    for number in ("HUB-1", "HUB-2"):
        nid, = await hub.notify(order_event(user["_id"], number=number))
        assert (await hub.statuses(nid))["push"] == ("sent", None)
    nid, = await hub.notify(order_event(user["_id"], number="HUB-3"))
    assert (await hub.statuses(nid))["push"] == ("held", "frequency_cap")


async def test_one_notification_counts_once_across_its_channels(hub):
    user = await hub.user(preferences={"frequency": {"max_per_hour": 1, "max_per_day": 50}})
    first, = await hub.notify(order_event(user["_id"], number="HUB-1"))
    assert [s for s, _ in (await hub.statuses(first)).values()].count("sent") == 3
    second, = await hub.notify(order_event(user["_id"], number="HUB-2"))
    assert (await hub.statuses(second))["email"] == ("held", "frequency_cap")


async def test_the_daily_cap(hub):
    user = await hub.user(preferences={"frequency": {"max_per_hour": 10, "max_per_day": 2}})
    sent = []
    for number in ("HUB-1", "HUB-2"):
        nid, = await hub.notify(order_event(user["_id"], number=number))
        sent.append(nid)
        hub.clock.advance(hours=2)
    held, = await hub.notify(order_event(user["_id"], number="HUB-3"))
    assert (await hub.statuses(held))["push"] == ("held", "frequency_cap")
    assert (await hub.deliveries(held))["push"]["release_at"] == T0 + timedelta(days=1)


async def test_releasing_many_held_at_once_still_respects_the_cap(hub):
    user = await hub.user(preferences={"frequency": {"max_per_hour": 2, "max_per_day": 50}})
    ids = []
    for i in range(6):
        nid, = await hub.notify(order_event(user["_id"], number=f"HUB-{i}"))
        ids.append(nid)
        if i >= 1:
            hub.clock.now = T0 + timedelta(minutes=i)
    assert [(await hub.statuses(nid))["push"][0] for nid in ids] == ["sent", "sent", "held", "held", "held", "held"]
    first_release = T0 + timedelta(hours=1)
    assert {(await hub.deliveries(nid))["push"]["release_at"] for nid in ids[2:]} == {first_release}

    hub.clock.now = first_release
    assert sorted(await hub.run_due()) == sorted(ids[2:])
    statuses = [(await hub.statuses(nid))["push"] for nid in ids[2:]]
    assert statuses.count(("sent", None)) == 2 and statuses.count(("held", "frequency_cap")) == 2
    still_held = [nid for nid in ids[2:] if (await hub.statuses(nid))["push"][0] == "held"]
    second_release = first_release + timedelta(hours=1)
    for nid in still_held:
        assert (await hub.deliveries(nid))["push"]["release_at"] == second_release
        assert (await hub.job(nid))["due_at"] == second_release
    assert len(hub.received("push")) == 4

    hub.clock.now = second_release
    assert sorted(await hub.run_due()) == sorted(still_held)
    assert [(await hub.statuses(nid))["push"] for nid in ids] == [("sent", None)] * 6
    assert len(hub.received("push")) == 6 and len({m.notification_id for m in hub.received("push")}) == 6


async def test_held_messages_released_concurrently_never_go_over_the_cap(hub):
    """The dispatcher runs due jobs side by side: however their admissions interleave, no
    sliding hour ever has more than the cap, and every message goes out in the end."""
    user = await hub.user(preferences={"frequency": {"max_per_hour": 2, "max_per_day": 50}})
    ids = []
    for i in range(8):
        hub.clock.now = T0 + timedelta(minutes=i)
        ids += await hub.notify(order_event(user["_id"], number=f"HUB-{i}"))
    for _ in range(20):
        due = await hub.store.due_jobs(T0 + timedelta(days=2), 100)
        if not due:
            break
        hub.clock.now = min([(await hub.job(nid))["due_at"] for nid in due])
        now = hub.clock()
        claimed = [nid for nid in await hub.store.due_jobs(now, 100) if await hub.store.claim(nid, now, now + LEASE)]
        await asyncio.gather(*(hub.notifier.process_many([nid]) for nid in claimed))
        for nid in claimed:
            push = (await hub.deliveries(nid))["push"]
            assert push["status"] == "sent" or (push["status"], push["reason"]) == ("held", "frequency_cap")
            assert push["status"] == "sent" or push["release_at"] > now
    assert [(await hub.statuses(nid))["push"] for nid in ids] == [("sent", None)] * 8
    times = hub.channels["push"].sent_at
    assert len(times) == 8
    for t in times:
        assert sum(1 for u in times if t - timedelta(hours=1) < u <= t) <= 2, times


async def test_stock_low_goes_to_every_admin(hub):
    first, second = await hub.user(roles=["admin"]), await hub.user(roles=["customer", "admin"])
    await hub.user()
    low = event("inventory.low", {"product_id": "p-1", "available": 2, "previous": 6, "low_stock_threshold": 5})
    ids = await hub.notify(low)
    assert len(set(ids)) == 2
    assert {(await hub.store.get(nid))["user_id"] for nid in ids} == {first["_id"], second["_id"]}
    assert {m.user_id for m in hub.received("push")} == {first["_id"], second["_id"]}
    assert await hub.notify(low) == ids  # a duplicate finds the same two
    assert len(hub.received("push")) == 2


async def test_dnd_then_caps_at_release(hub):
    """Messages held overnight are released together at the window's end: the caps still apply."""
    user = await hub.user(preferences=dict(DND, frequency={"max_per_hour": 2, "max_per_day": 50}))
    ids = [(await hub.notify(order_event(user["_id"], number=f"HUB-{i}")))[0] for i in range(3)]
    assert [(await hub.statuses(nid))["push"] for nid in ids] == [("held", "dnd")] * 3
    hub.clock.now = DND_END
    await hub.run_due()
    statuses = [(await hub.statuses(nid))["push"] for nid in ids]
    assert sorted(statuses) == [("held", "frequency_cap"), ("sent", None), ("sent", None)]
    assert len(hub.received("push")) == 2


# Relevance ------------------------------------------------------------------------------------

async def test_stock_low_held_past_its_relevance_is_suppressed_expired(hub):
    admin = await hub.user(roles=["customer", "admin"], preferences=DND)
    await hub.user()  # a customer: not told
    nid, = await hub.notify(event("inventory.low", {"product_id": "p-1", "available": 2, "previous": 6,
                                                   "low_stock_threshold": 5}))
    doc = await hub.store.get(nid)
    assert doc["user_id"] == admin["_id"] and doc["expires_at"] == T0 + timedelta(hours=1)
    assert doc["title"] == "Low stock: Blue Kettle"
    deliveries = await hub.deliveries(nid)
    assert (deliveries["push"]["status"], deliveries["push"]["reason"]) == ("held", "dnd")
    assert deliveries["push"]["release_at"] == T0 + timedelta(hours=1)  # its expiry comes before 08:00
    hub.clock.advance(hours=1)
    assert await hub.run_due() == [nid]
    assert await hub.statuses(nid) == {"email": ("suppressed", "expired"), "sms": ("suppressed", "preference"),
                                       "push": ("suppressed", "expired"), "websocket": ("suppressed", "expired")}
    assert all(hub.channels[c].calls == [] for c in hub.channels)
    assert await hub.job(nid) is None


async def test_a_push_carries_the_time_left_to_live(hub):
    await hub.user(roles=["admin"])
    nid, = await hub.notify(event("inventory.low", {"product_id": "p-1", "available": 2, "previous": 6,
                                                   "low_stock_threshold": 5}))
    push, = hub.received("push")
    assert push.ttl_s == 3600 and push.topic == "low-p-1"
    order_user = await hub.user()
    await hub.notify(order_event(order_user["_id"]))
    assert hub.received("push")[-1].ttl_s == 24 * 3600


# Failures -------------------------------------------------------------------------------------

async def test_a_transient_failure_is_retried_after_the_backoff(hub):
    user = await hub.user()
    hub.channels["email"].script = [TransientError("timeout", "smtp timed out")]
    nid, = await hub.notify(order_event(user["_id"]))
    email = (await hub.deliveries(nid))["email"]
    assert (email["status"], email["reason"], email["attempts"]) == ("queued", "timeout", 1)
    retry_at = T0 + timedelta(seconds=RETRY_BASE_S)
    assert email["next_at"] == retry_at
    assert (await hub.statuses(nid))["push"] == ("sent", None)  # the other channels went
    assert (await hub.job(nid))["due_at"] == retry_at
    public = {d["channel"]: d for d in public_notification(await hub.store.get(nid))["deliveries"]}
    assert datetime.fromisoformat(public["email"]["until"]) == retry_at

    hub.clock.now = retry_at - timedelta(seconds=1)
    assert await hub.run_due() == []
    hub.clock.now = retry_at
    assert await hub.run_due() == [nid]
    email = (await hub.deliveries(nid))["email"]
    assert (email["status"], email["reason"], email["attempts"]) == ("sent", None, 2)
    assert len(hub.channels["email"].calls) == 2 and len(hub.received("email")) == 1
    assert len(hub.channels["push"].calls) == 1  # only the failed channel is tried again
    assert await hub.job(nid) is None


async def test_a_providers_retry_after_sets_the_next_attempt(hub):
    user = await hub.user()
    hub.channels["push"].script = [TransientError("push_429", "slow down", retry_after_s=600)]
    nid, = await hub.notify(order_event(user["_id"]))
    push = (await hub.deliveries(nid))["push"]
    assert (push["status"], push["reason"]) == ("queued", "push_429")
    assert push["next_at"] == T0 + timedelta(seconds=600)  # not the 40 s backoff
    hub.clock.advance(seconds=599)
    assert await hub.run_due() == []
    hub.clock.advance(seconds=1)
    assert await hub.run_due() == [nid]
    assert (await hub.statuses(nid))["push"] == ("sent", None)


async def test_transient_failures_until_max_attempts_fail_with_the_reason(hub):
    user = await hub.user()
    hub.channels["email"].script = [TransientError("smtp_451", "try later")] * 3
    nid, = await hub.notify(order_event(user["_id"]))
    hub.clock.advance(seconds=RETRY_BASE_S)
    await hub.run_due()
    email = (await hub.deliveries(nid))["email"]
    assert (email["status"], email["attempts"]) == ("queued", 2)
    assert email["next_at"] == hub.clock() + timedelta(seconds=2 * RETRY_BASE_S)  # doubled
    hub.clock.advance(seconds=2 * RETRY_BASE_S)
    await hub.run_due()
    email = (await hub.deliveries(nid))["email"]
    assert (email["status"], email["reason"], email["attempts"]) == ("failed", "smtp_451", 3)
    assert len(hub.channels["email"].calls) == 3 and hub.received("email") == []
    assert await hub.job(nid) is None
    hub.clock.advance(hours=1)
    assert await hub.run_due() == []


async def test_the_job_is_due_at_the_earliest_retry(hub):
    hub.notifier = hub.make_notifier(jitter=iter([0.0, 1.0]).__next__)  # one retry after 32 s, one after 48 s
    user = await hub.user()
    hub.channels["email"].script = [TransientError("timeout", "smtp")]
    hub.channels["push"].script = [TransientError("http_503", "503")]
    nid, = await hub.notify(order_event(user["_id"]))
    deliveries = await hub.deliveries(nid)
    retries = sorted([deliveries["email"]["next_at"], deliveries["push"]["next_at"]])
    assert retries == [T0 + timedelta(seconds=32), T0 + timedelta(seconds=48)]
    assert (await hub.job(nid))["due_at"] == retries[0]
    hub.clock.now = retries[0]
    await hub.run_due()
    assert [s for s, _ in (await hub.statuses(nid)).values()].count("sent") == 2  # websocket and the first retry
    assert (await hub.job(nid))["due_at"] == retries[1]
    hub.clock.now = retries[1]
    await hub.run_due()
    assert (await hub.statuses(nid))["email"] == (await hub.statuses(nid))["push"] == ("sent", None)
    assert await hub.job(nid) is None


async def test_a_retry_due_after_the_message_expired_is_suppressed(hub):
    hub.notifier = hub.make_notifier(retry_base_s=4000)  # the retry would come after the hour of relevance
    await hub.user(roles=["admin"])
    hub.channels["push"].script = [TransientError("http_503", "503")]
    nid, = await hub.notify(event("inventory.low", {"product_id": "p-1", "available": 2, "previous": 6,
                                                   "low_stock_threshold": 5}))
    assert (await hub.statuses(nid))["push"] == ("queued", "http_503")
    hub.clock.advance(seconds=4000)
    assert await hub.run_due() == [nid]
    push = (await hub.deliveries(nid))["push"]
    assert (push["status"], push["reason"], push["attempts"]) == ("suppressed", "expired", 1)
    assert len(hub.channels["push"].calls) == 1
    assert await hub.job(nid) is None


async def test_a_retry_is_not_held_again_by_a_window_that_began_after_it_was_cleared(hub):
    """The policy is decided once per delivery: a retry finishes the send that was cleared."""
    hub.clock.now = DND_END - timedelta(hours=10, seconds=10)  # 21:59:50 in Paris
    user = await hub.user(preferences=DND)
    hub.channels["email"].script = [TransientError("timeout", "smtp")]
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["email"] == ("queued", "timeout")
    assert (await hub.statuses(nid))["push"] == ("sent", None)
    hub.clock.advance(seconds=RETRY_BASE_S)  # 22:00:30: inside the window now
    await hub.run_due()
    assert (await hub.statuses(nid))["email"] == ("sent", None)


async def test_a_permanent_failure_fails_at_once(hub):
    user = await hub.user()
    hub.channels["email"].script = [PermanentError("rejected_address", "550 no such user")]
    nid, = await hub.notify(order_event(user["_id"]))
    email = (await hub.deliveries(nid))["email"]
    assert (email["status"], email["reason"], email["attempts"]) == ("failed", "rejected_address", 1)
    assert await hub.job(nid) is None
    hub.clock.advance(hours=1)
    assert await hub.run_due() == []
    assert len(hub.channels["email"].calls) == 1


async def test_a_hard_bounced_address_gets_no_email_for_a_while_then_one_try(hub):
    user = await hub.user()
    hub.channels["email"].script = [PermanentError("recipient_rejected", "550 no such user", gone=True)]
    bounced, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(bounced))["email"] == ("failed", "recipient_rejected")
    assert public_user(await hub.users.get(user["_id"]))["email_bounced_at"] == hub.clock().isoformat()

    hub.clock.advance(days=29)
    later, = await hub.notify(order_event(user["_id"], "order.delivered"))
    assert (await hub.statuses(later))["email"] == ("suppressed", "address_bounced")
    assert (await hub.statuses(later))["push"] == ("sent", None)  # other channels are not affected
    assert len(hub.channels["email"].calls) == 1

    hub.clock.advance(days=2)  # past the hold: one try, and it goes through
    again, = await hub.notify(order_event(user["_id"], "order.returned"))
    assert (await hub.statuses(again))["email"] == ("sent", None)
    assert public_user(await hub.users.get(user["_id"]))["email_bounced_at"] is None


async def test_an_email_rejected_for_another_reason_does_not_mark_the_address(hub):
    user = await hub.user()
    hub.channels["email"].script = [PermanentError("recipient_rejected", "552 mailbox full")]
    await hub.notify(order_event(user["_id"]))
    later, = await hub.notify(order_event(user["_id"], "order.delivered"))
    assert (await hub.statuses(later))["email"] == ("sent", None)
    assert public_user(await hub.users.get(user["_id"]))["email_bounced_at"] is None


async def test_a_dead_push_subscription_is_forgotten(hub):
    user = await hub.user(push_subscriptions=[subscription("old-phone"), subscription("laptop")])
    hub.channels["push"].failing[subscription("old-phone")["endpoint"]] = PermanentError("gone", "410", gone=True)
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["push"] == ("sent", None)  # the laptop took it
    assert [m.address["endpoint"] for m in hub.received("push")] == [subscription("laptop")["endpoint"]]
    assert (await hub.users.get(user["_id"]))["push_subscriptions"] == [subscription("laptop")]


async def test_the_last_dead_subscription_fails_the_push_and_later_ones_have_no_address(hub):
    user = await hub.user()
    hub.channels["push"].failing[subscription("phone")["endpoint"]] = PermanentError("gone", "404", gone=True)
    nid, = await hub.notify(order_event(user["_id"]))
    push = (await hub.deliveries(nid))["push"]
    assert (push["status"], push["reason"], push["attempts"]) == ("failed", "gone", 1)
    assert (await hub.users.get(user["_id"]))["push_subscriptions"] == []
    later, = await hub.notify(order_event(user["_id"], "order.delivered"))
    assert (await hub.statuses(later))["push"] == ("suppressed", "no_address")


async def test_a_push_rejected_for_another_reason_keeps_the_subscription(hub):
    user = await hub.user()
    hub.channels["push"].failing[subscription("phone")["endpoint"]] = PermanentError("bad_payload", "400")
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["push"] == ("failed", "bad_payload")
    assert (await hub.users.get(user["_id"]))["push_subscriptions"] == [subscription("phone")]


async def test_a_push_that_failed_transiently_on_one_device_and_went_nowhere_is_retried(hub):
    user = await hub.user(push_subscriptions=[subscription("a"), subscription("b")])
    hub.channels["push"].failing.update({subscription("a")["endpoint"]: PermanentError("gone", "410", gone=True),
                                         subscription("b")["endpoint"]: TransientError("http_503", "503")})
    nid, = await hub.notify(order_event(user["_id"]))
    push = (await hub.deliveries(nid))["push"]
    assert (push["status"], push["reason"], push["attempts"]) == ("queued", "http_503", 1)
    assert (await hub.users.get(user["_id"]))["push_subscriptions"] == [subscription("b")]
    hub.channels["push"].failing.clear()
    hub.clock.advance(seconds=RETRY_BASE_S)
    await hub.run_due()
    assert (await hub.statuses(nid))["push"] == ("sent", None)
    assert [m.address for m in hub.received("push")] == [subscription("b")]


async def test_a_broken_template_override_falls_back_to_the_shipped_one(hub):
    await hub.template_store.put("order_shipped", "push", "en", {"title": "{{ 1 / 0 }}", "body": "b"})
    user = await hub.user()
    nid, = await hub.notify(order_event(user["_id"]))
    assert (await hub.statuses(nid))["push"] == ("sent", None)
    push, = hub.received("push")
    assert push.content["title"] == "Order HUB-20260042 shipped"


async def test_a_locale_override_is_used_for_the_users_locale(hub):
    await hub.templates.save("order_shipped", "push", "fr", {"title": "Commande {{ data.number }} expédiée",
                                                             "body": "En route."})
    french = await hub.user(locale="fr-FR")
    english = await hub.user(locale="en-GB")
    await hub.notify(order_event(french["_id"]))
    await hub.notify(order_event(english["_id"]))
    titles = {m.user_id: m.content["title"] for m in hub.received("push")}
    assert titles == {french["_id"]: "Commande HUB-20260042 expédiée", english["_id"]: "Order HUB-20260042 shipped"}


async def test_points_event_with_odd_data_still_notifies(hub):
    user = await hub.user()
    nid, = await hub.notify(event("points.redeemed", {"user_id": user["_id"], "delta": "-40", "balance": 60}))
    assert (await hub.statuses(nid))["push"] == ("sent", None)
    assert hub.received("push")[0].content["title"] == "You spent 40 points"
    other, = await hub.notify(event("points.expired", {"user_id": user["_id"], "balance": 60}))
    assert (await hub.statuses(other))["push"] == ("sent", None)


# Recording ------------------------------------------------------------------------------------

async def test_a_duplicate_event_records_and_sends_nothing_twice(hub):
    user = await hub.user()
    shipped = order_event(user["_id"])
    first = await hub.notify(shipped)
    hub.clock.advance(minutes=5)
    again = await hub.notify(dict(shipped))
    assert first == again and len(first) == 1
    assert hub.recorded == first  # recorded (and dispatched) once
    assert await hub.store.col.count_documents({}) == 1
    assert [len(hub.received(c)) for c in ("email", "push", "websocket")] == [1, 1, 1]
    assert await hub.job(first[0]) is None
    assert (await hub.store.get(first[0]))["created_at"] == T0


async def test_a_duplicate_of_a_held_notification_keeps_its_hold(hub):
    user = await hub.user(preferences=DND)
    shipped = order_event(user["_id"])
    nid, = await hub.notify(shipped)
    assert await hub.notify(dict(shipped)) == [nid]
    job = await hub.job(nid)
    assert job["due_at"] == DND_END and job["held"] is True
    assert await hub.store.col.count_documents({}) == 1
    hub.clock.now = DND_END
    await hub.run_due()
    assert len(hub.received("push")) == 1


async def test_an_unknown_user_is_rejected_and_nothing_is_stored(hub):
    with pytest.raises(Rejected, match="unknown user"):
        await hub.notify(order_event("no-such-user"))
    with pytest.raises(Rejected):
        await hub.notify(requested("no-such-user"))
    assert await hub.store.col.count_documents({}) == 0
    assert await hub.store.jobs.count_documents({}) == 0


async def test_an_invalid_event_is_rejected(hub):
    with pytest.raises(Rejected):
        await hub.notify(event("order.shipped", {"order_id": "o-1", "number": "HUB-1"}))
    user = await hub.user()
    with pytest.raises(Rejected):
        await hub.notify(requested(user["_id"], priority="critical"))
    assert await hub.store.col.count_documents({}) == 0


async def test_a_user_deleted_before_processing_suppresses_with_no_user(hub):
    user = await hub.user()
    nid, = await hub.notifier.record(order_event(user["_id"]))
    await hub.users.col.delete_one({"_id": user["_id"]})
    # Processed later, by any process (the recording one would use what it just read).
    await hub.make_notifier().process_many([nid])
    assert await hub.statuses(nid) == {"email": ("suppressed", "no_user"), "sms": ("suppressed", "preference"),
                                       "push": ("suppressed", "no_user"), "websocket": ("suppressed", "no_user")}
    assert await hub.job(nid) is None


async def test_a_recorded_notification_left_unprocessed_is_taken_up_after_its_lease(hub):
    """A process that recorded and died: its job's lease runs out and a poll takes it up."""
    user = await hub.user()
    nid, = await hub.notifier.record(order_event(user["_id"]))
    assert (await hub.job(nid))["due_at"] == T0 + LEASE
    assert await hub.run_due() == []
    hub.clock.advance(seconds=LEASE.total_seconds())
    assert await hub.run_due() == [nid]
    assert (await hub.statuses(nid))["push"] == ("sent", None)


async def test_what_was_sent_is_recorded_while_the_rest_of_its_batch_is_still_sending(hub):
    """A message handed to the provider but not yet recorded goes again if the process dies
    (docs/notifications.md "Exactly once"), so a batch records each send as it finishes,
    not when its slowest send does."""
    fast, slow = await hub.user(), await hub.user()
    email = hub.channels["email"]
    stalled = asyncio.Event()
    accept = email.send

    async def send(message):
        if message.address == slow["email"]:
            await stalled.wait()
        return await accept(message)
    email.send = send
    first, = await hub.notifier.record(order_event(fast["_id"], number="HUB-1"))
    second, = await hub.notifier.record(order_event(slow["_id"], number="HUB-2"))
    batch = asyncio.ensure_future(hub.notifier.process_many([first, second]))
    try:
        for _ in range(500):
            if (await hub.statuses(first))["email"] == ("sent", None):
                break
            await asyncio.sleep(0.01)
        assert (await hub.statuses(first))["email"] == ("sent", None)
        assert (await hub.statuses(second))["email"] == ("queued", None)
    finally:
        stalled.set()
    await batch
    assert (await hub.statuses(second))["email"] == ("sent", None)


async def test_back_in_stock_goes_to_the_watchers_and_removes_their_alerts(hub):
    ada, bob, carol = await hub.user(name="Ada"), await hub.user(name="Bob"), await hub.user(name="Carol")
    await hub.alerts.add("p-1", ada["_id"], T0)
    await hub.alerts.add("p-1", bob["_id"], T0)
    await hub.alerts.add("p-2", ada["_id"], T0)
    # Still out of stock, or already in stock: nobody is told.
    for previous, available in ((0, 0), (3, 5)):
        assert await hub.notify(event("inventory.changed", {"product_id": "p-1", "available": available,
                                                            "previous": previous, "low_stock_threshold": 5})) == []
    back = event("inventory.changed", {"product_id": "p-1", "available": 5, "previous": 0, "low_stock_threshold": 5})
    ids = await hub.notify(back)
    assert len(ids) == 2
    docs = [await hub.store.get(nid) for nid in ids]
    assert {d["user_id"] for d in docs} == {ada["_id"], bob["_id"]}
    assert all(d["type"] == "back_in_stock" and d["title"] == "Blue Kettle is back in stock" for d in docs)
    assert {m.user_id for m in hub.received("push")} == {ada["_id"], bob["_id"]}
    assert all(m.content["body"] == "Blue Kettle is available again: 5 in stock." for m in hub.received("push"))
    assert await hub.alerts.watchers("p-1") == []
    assert await hub.alerts.watchers("p-2") == [ada["_id"]]  # other products' alerts stay
    assert carol["_id"] not in {m.user_id for m in hub.received("websocket")}
    # The alerts are used up: the same event again, or a later one, tells nobody.
    assert await hub.notify(back) == []
    assert await hub.store.col.count_documents({}) == 2
    later = event("inventory.changed", {"product_id": "p-1", "available": 4, "previous": 0, "low_stock_threshold": 5})
    assert await hub.notify(later) == []
    assert len(hub.received("push")) == 2


async def test_other_services_order_payment_and_points_events_notify_through_the_hubs_own_event(hub):
    """The hub applies another service's order.shipped and announces the change itself:
    only that announcement notifies, so the user hears of the change once."""
    user = await hub.user()
    notifier = hub.make_notifier(source="/hub")
    external = order_event(user["_id"])  # source "test": another service
    assert await notifier.record(external) == []
    assert await notifier.record(dict(payment_failed(user["_id"]), source="/payments")) == []
    assert await hub.store.col.count_documents({}) == 0
    announced = dict(order_event(user["_id"]), source="/hub")
    assert len(await notifier.record(announced)) == 1
    # notification.requested and inventory events from anywhere notify directly.
    assert len(await notifier.record(requested(user["_id"]))) == 1
    assert await hub.store.col.count_documents({}) == 2
