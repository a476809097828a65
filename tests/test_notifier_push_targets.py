"""The push delivery's targets in the notification engine (domain/notifications.Notifier):
each Web Push subscription and APNs/FCM device with its own outcome, attempts and retry
time, driven with the test's clock (the set-up of tests/test_notifier.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.delivery import PermanentError, Sent, TransientError
from domain.notifications import public_notification, webpush_id
from hub.stores.devices import DeviceStore
from tests.test_notifier import RETRY_BASE_S, T0, FakeChannel, hub, requested, subscription  # noqa: F401



class DeviceChannel(FakeChannel):
    """A FakeChannel whose `failing` is keyed by device token (or endpoint)."""

    async def send(self, message):
        self.calls.append(message)
        failure = self.failing.get(message.address.get("token") or message.address.get("endpoint"))
        if failure is not None:
            raise failure
        self.sent.append(message)
        return Sent(provider_id=f"{self.name}-{len(self.sent)}")


@pytest.fixture
def phones(hub):
    """The engine with APNs and FCM senders and a device store; `phones.add(user, platform, token)`."""
    store = DeviceStore(hub.db)
    hub.channels["apns"] = DeviceChannel("apns", clock=hub.clock)
    hub.channels["fcm"] = DeviceChannel("fcm", clock=hub.clock)
    hub.channels["push"] = DeviceChannel("push", clock=hub.clock)
    hub.notifier = hub.make_notifier()
    hub.notifier.devices = store

    added = []

    async def add(user: dict, platform: str, token: str) -> str:
        added.append(token)  # registered a second apart, so the oldest is first
        device, _ = await store.register(user["_id"], platform, token, {"environment": "production"},
                                         T0 - timedelta(seconds=100 - len(added)), 10)
        return device["_id"]

    store.add = add
    return store


async def push_only(hub, user) -> str:
    (nid,) = await hub.notify(requested(user["_id"], channels=["push"], priority="high"))
    return nid


def targets(delivery: dict) -> dict[str, tuple]:
    return {t["id"]: (t["kind"], t["status"], t.get("reason"), t["attempts"]) for t in delivery["targets"]}


async def test_every_target_gets_its_own_outcome_and_the_failing_one_is_retried_alone(hub, phones):
    user = await hub.user()
    iphone = await phones.add(user, "apns", "a" * 64)
    android = await phones.add(user, "fcm", "fcm-token-0123456789")
    hub.channels["apns"].failing["a" * 64] = TransientError("apns_503", "busy", retry_after_s=100)

    nid = await push_only(hub, user)
    push = (await hub.deliveries(nid))["push"]
    assert push["status"] == "queued" and push["reason"] == "apns_503"
    assert targets(push) == {webpush_id(subscription("phone")): ("webpush", "sent", None, 1),
                             iphone: ("apns", "queued", "apns_503", 1), android: ("fcm", "sent", None, 1)}
    assert push["next_at"] == T0 + timedelta(seconds=100)  # the provider's Retry-After, over the 40 s base

    hub.clock.advance(seconds=99)
    assert await hub.run_due() == []
    del hub.channels["apns"].failing["a" * 64]
    hub.clock.advance(seconds=1)
    assert await hub.run_due() == [nid]
    push = (await hub.deliveries(nid))["push"]
    assert push["status"] == "sent" and push["attempts"] == 2
    assert targets(push)[iphone] == ("apns", "sent", None, 2)
    assert targets(push)[android] == ("fcm", "sent", None, 1)
    assert [len(hub.channels[c].calls) for c in ("push", "apns", "fcm")] == [1, 2, 1]
    assert await hub.job(nid) is None
    shown = next(d for d in public_notification(await hub.store.get(nid))["deliveries"] if d["channel"] == "push")
    assert {t["kind"] for t in shown["targets"]} == {"webpush", "apns", "fcm"}
    assert all(set(t) == {"kind", "id", "status", "reason", "attempts", "at", "until"} for t in shown["targets"])


async def test_a_target_fails_alone_after_its_attempts_and_the_rest_stay_sent(hub, phones):
    user = await hub.user(push_subscriptions=[])
    iphone = await phones.add(user, "apns", "b" * 64)
    android = await phones.add(user, "fcm", "fcm-token-abcdefghij")
    hub.channels["fcm"].failing["fcm-token-abcdefghij"] = TransientError("fcm_500", "down")
    nid = await push_only(hub, user)
    for seconds in (RETRY_BASE_S, 2 * RETRY_BASE_S):
        hub.clock.advance(seconds=seconds)
        assert await hub.run_due() == [nid]
    push = (await hub.deliveries(nid))["push"]
    assert push["status"] == "sent"
    assert targets(push) == {iphone: ("apns", "sent", None, 1), android: ("fcm", "failed", "fcm_500", 3)}
    assert len(hub.channels["apns"].calls) == 1


async def test_dead_devices_are_removed_and_a_delivery_with_no_taker_fails(hub, phones):
    user = await hub.user(push_subscriptions=[])
    dead = await phones.add(user, "apns", "c" * 64)
    mismatch = await phones.add(user, "fcm", "fcm-token-mismatch00")
    hub.channels["apns"].failing["c" * 64] = PermanentError("unregistered", "410", gone=True)
    hub.channels["fcm"].failing["fcm-token-mismatch00"] = PermanentError("sender_id_mismatch", "403", gone=True)
    nid = await push_only(hub, user)
    push = (await hub.deliveries(nid))["push"]
    assert (push["status"], push["reason"]) == ("failed", "unregistered")
    assert targets(push) == {dead: ("apns", "failed", "unregistered", 1),
                             mismatch: ("fcm", "failed", "sender_id_mismatch", 1)}
    assert await phones.of_user(user["_id"]) == []
    nid = await push_only(hub, user)
    assert await hub.statuses(nid) == {"push": ("suppressed", "no_address")}


async def test_a_device_deleted_before_its_retry_is_not_tried_again(hub, phones):
    user = await hub.user(push_subscriptions=[])
    iphone = await phones.add(user, "apns", "d" * 64)
    hub.channels["apns"].failing["d" * 64] = TransientError("timeout", "slow")
    android = await phones.add(user, "fcm", "fcm-token-kept000000")
    nid = await push_only(hub, user)
    assert await phones.remove(user["_id"], iphone)
    hub.clock.advance(seconds=RETRY_BASE_S)
    assert await hub.run_due() == [nid]
    push = (await hub.deliveries(nid))["push"]
    assert push["status"] == "sent"
    assert targets(push) == {iphone: ("apns", "failed", "removed", 1), android: ("fcm", "sent", None, 1)}
    assert len(hub.channels["apns"].calls) == 1


async def test_read_or_acknowledged_before_the_retry_rings_no_phone(hub, phones):
    user = await hub.user(push_subscriptions=[])
    iphone = await phones.add(user, "apns", "e" * 64)
    hub.channels["apns"].failing["e" * 64] = TransientError("apns_429", "slow down")
    (nid,) = await hub.notify(requested(user["_id"], channels=["push", "websocket"], priority="high"))
    assert await hub.notifier.acknowledge(user["_id"], nid)
    hub.clock.advance(seconds=RETRY_BASE_S)
    assert await hub.run_due() == [nid]
    push = (await hub.deliveries(nid))["push"]
    assert (push["status"], push["reason"]) == ("suppressed", "seen")
    assert targets(push) == {iphone: ("apns", "suppressed", "seen", 1)}
    assert len(hub.channels["apns"].calls) == 1


async def test_native_pushes_carry_the_unread_count_as_badge(hub, phones):
    user = await hub.user(push_subscriptions=[])
    await phones.add(user, "apns", "f" * 64)
    await push_only(hub, user)
    await push_only(hub, user)
    assert [m.badge for m in hub.channels["apns"].sent] == [1, 2]
