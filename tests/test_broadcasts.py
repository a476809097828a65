"""Broadcasts end to end (CONTRACT v2 §5): POST /api/v1/broadcasts over HTTP, the audience
expanded into batches on Kafka, the batches consumed by the hub-broadcasts group, every
recipient notified by their own rules, emails at a real SMTP sink.

What these prove: each member of a 5,000-member topic gets exactly one notification and the
right deliveries (held during DND and released after, suppressed when marketing is off);
an Idempotency-Key makes a retried request the same broadcast; a redelivered batch
notifies nobody twice; cancel stops the recipients not reached yet and the counts say so;
two hub processes share the batches, and when one stops half-way the other finishes with
every recipient notified exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timezone

import pytest

from config.settings import load_settings
from domain.events import cloud_event
from hub.wiring.server import HubServer
from tests.broadcast_e2e import (MARKETING_OFF, SERVICE, announcement, dnd_now, finished, progress, start_broadcast,
                                 stored_users, topic_with)
from tests.conftest import MONGODB_URI
from tests.notify_e2e import Api, WsClient, deliveries, eventually, hub_env, inbox, metric_value, quietly, sink  # noqa: F401
from tests.notify_e2e import push, twilio  # noqa: F401


def _recipients(sink) -> Counter:
    return Counter(address for m in sink.messages for address in m.rcpt_tos)


# Thousands of sends on a loaded machine: the 1 s provider timeout of tests/notify_e2e.py (there
# so that a stalled peer is quick to test) can turn a slow answer into a retry, or a mail the
# sink took while its answer was late into a second one; these tests count every mail.
PATIENT = {"HUB_PROVIDER_TIMEOUT_S": "10"}


@pytest.fixture
def extra_env():
    return PATIENT


@pytest.mark.timeout(300)
async def test_topic_broadcast_reaches_each_member_once_by_their_rules(api, hub_server, sink):
    hub = hub_server.hub
    plain = await stored_users(hub, 4_940)
    held = await stored_users(hub, 30, preferences={"dnd": dnd_now()})
    off = await stored_users(hub, 30, preferences=MARKETING_OFF)
    ann = await api.register()  # a member who reads her inbox over HTTP
    members = [u["_id"] for u in plain + held + off] + [ann["user"]["id"]]
    await topic_with(api, "flash-sale", members)
    assert (await api.call("GET", "/api/v1/topics/flash-sale", headers=SERVICE)).data["subscribers"] == 5_001

    before = await metric_value(api, "hub_broadcast_recipients_total", outcome="processed")
    bid = await start_broadcast(api, announcement({"topic": "flash-sale"}), key="sale-1")
    early = await progress(api, bid)
    assert early["status"] in ("queued", "running", "done") and early["recipients"] == 5_001
    done = await finished(api, bid, timeout=240)
    assert done["recipients"] == 5_001 and done["processed"] == 5_001 and done["finished_at"]
    sent = len(plain) + 1

    async def counted():
        # A delivery retried after a transient failure is counted as it moves on (every second).
        counts = (await progress(api, bid))["counts"]
        assert counts["email"] == {"sent": sent, "held": 30, "suppressed": 30}, counts
        assert counts["websocket"] == {"sent": sent + 30, "held": 30}, counts
        return True
    await eventually(counted, 30, what="every delivery counted where it ended")
    await sink.wait_for(sent, timeout=60)
    await quietly(1.0, lambda: len(sink.messages) == sent)
    by_address = _recipients(sink)
    assert set(by_address.values()) == {1}
    assert set(by_address) == {u["email"] for u in plain} | {ann["user"]["email"]}
    assert {m["Subject"] for m in sink.messages} == {"Flash sale"}
    assert await metric_value(api, "hub_broadcast_recipients_total", outcome="processed") - before == 5_001

    store = hub.stores.notifications
    assert await store.col.count_documents({"broadcast_id": bid}) == 5_001
    item = (await inbox(api, ann["access_token"]))["items"][0]
    assert item["title"] == "Flash sale" and item["category"] == "marketing"
    assert {c: d["status"] for c, d in deliveries(item).items()} == {"email": "sent", "websocket": "sent"}
    suppressed = await store.col.find_one({"broadcast_id": bid, "user_id": off[0]["_id"]})
    assert suppressed["deliveries"]["email"]["status"] == "suppressed"
    assert suppressed["deliveries"]["email"]["reason"] == "preference"
    waiting = await store.col.find_one({"broadcast_id": bid, "user_id": held[0]["_id"]})
    assert waiting["deliveries"]["email"]["status"] == "held" and waiting["deliveries"]["email"]["reason"] == "dnd"

    # The window ends (simulated: the held jobs fall due now): the held ones go out, once,
    # and the broadcast's counts follow.
    now = datetime.now(timezone.utc)
    held_ids = [doc["_id"] async for doc in store.col.find({"broadcast_id": bid, "user_id": {"$in": [
        u["_id"] for u in held]}}, {"_id": 1})]
    await hub.stores.users.col.update_many({"_id": {"$in": [u["_id"] for u in held]}}, {"$set": {"preferences": {}}})
    for nid in held_ids:
        await store.col.update_one({"_id": nid}, {"$set": {"deliveries.email.release_at": now,
                                                          "deliveries.websocket.release_at": now}})
    await store.jobs.update_many({"_id": {"$in": held_ids}}, {"$set": {"due_at": now}})
    await sink.wait_for(sent + 30, timeout=30)

    async def released():
        counts = (await progress(api, bid))["counts"]
        # No `held: 0` left behind: a status nobody is in any more is not shown.
        assert counts["email"] == {"sent": sent + 30, "suppressed": 30}, counts
        return counts
    await eventually(released, 15, what="held deliveries counted as sent")
    await quietly(1.0, lambda: len(sink.messages) == sent + 30)
    assert set(_recipients(sink).values()) == {1}


@pytest.mark.timeout(120)
async def test_a_retried_request_is_the_same_broadcast_and_a_redelivered_batch_notifies_nobody_twice(
        api, hub_server, sink):
    hub = hub_server.hub
    users = await stored_users(hub, 40)
    ids = [u["_id"] for u in users]
    body = announcement({"user_ids": ids + ["nobody"]}, channels=["email"])
    first = await start_broadcast(api, body, key="once")
    second = await start_broadcast(api, body, key="once")
    assert first == second
    r = await api.call("POST", "/api/v1/broadcasts", dict(body, title="Other"),
                       headers=dict(SERVICE, **{"Idempotency-Key": "once"}))
    assert r.status == 422 and r.error_code == "idempotency_key_reused"
    done = await finished(api, first, timeout=60)
    assert done["recipients"] == 40 and done["processed"] == 40 and done["counts"] == {"email": {"sent": 40}}
    await sink.wait_for(40, timeout=30)

    # Kafka delivers a batch again (e.g. after a rebalance): nothing is sent or counted twice.
    event = cloud_event("broadcast.batch", hub.settings.event_source,
                        {"broadcast_id": first, "page": 0, "user_ids": sorted(ids)}, event_id=f"{first}-0")
    await hub.services.broadcasts.publish(event)
    await quietly(2.0, lambda: len(sink.messages) == 40)
    assert set(_recipients(sink).values()) == {1}
    again = await progress(api, first)
    assert again["processed"] == 40 and again["counts"] == {"email": {"sent": 40}}
    assert await hub.stores.notifications.col.count_documents({"broadcast_id": first}) == 40
    # A batch the counting never saw (a process died after notifying, before counting):
    # the notifications stored already are counted as they stand, not sent again.
    await hub.stores.broadcasts.col.update_one({"_id": first}, {"$pull": {"done_pages": 0},
                                                              "$inc": {"processed": -40, "counts.email.sent": -40}})
    await hub.services.broadcasts.publish(event)
    await eventually(lambda: _processed(api, first, 40), 10, what="batch counted again")
    await quietly(1.0, lambda: len(sink.messages) == 40)
    assert (await progress(api, first))["counts"] == {"email": {"sent": 40}}


async def _processed(api, bid: str, n: int) -> bool:
    return (await progress(api, bid))["processed"] == n


@pytest.mark.timeout(120)
@pytest.mark.parametrize("extra_env", [{**PATIENT, "HUB_BROADCAST_BATCH_SIZE": "50", "HUB_BROADCAST_CONCURRENCY": "8"}])
async def test_cancel_stops_the_recipients_not_reached_yet(api, hub_server, sink):
    hub = hub_server.hub
    users = await stored_users(hub, 1_500)
    sink.stall_next(0.02, count=10_000)  # slow mail: the broadcast takes a while
    bid = await start_broadcast(api, announcement({"all": True}, channels=["email"]))
    await eventually(lambda: _processed_at_least(api, bid, 100), 60, interval=0.05, what="some processed")
    r = await api.call("POST", f"/api/v1/broadcasts/{bid}/cancel", headers=SERVICE)
    assert r.status == 200 and r.data["status"] == "cancelled", r
    total = len(users) + 1  # and the admin: every user

    async def settled():
        data = await progress(api, bid)
        assert data["processed"] + data["skipped"] == total, data
        return data
    final = await eventually(settled, 60, what="every batch handled or skipped")
    assert final["status"] == "cancelled" and final["finished_at"]
    assert final["skipped"] > 0 and final["processed"] < total
    assert await hub.stores.notifications.col.count_documents({"broadcast_id": bid}) == final["processed"]
    assert final["counts"] == {"email": {"sent": final["processed"]}}
    await sink.wait_for(final["processed"], timeout=20)
    await quietly(1.5, lambda: len(sink.messages) == final["processed"])
    r = await api.call("POST", f"/api/v1/broadcasts/{bid}/cancel", headers=SERVICE)
    assert r.status == 200 and r.data["status"] == "cancelled"


async def _processed_at_least(api, bid: str, n: int) -> bool:
    return (await progress(api, bid))["processed"] >= n


@pytest.mark.timeout(240)
@pytest.mark.parametrize("extra_env", [{**PATIENT, "HUB_BROADCAST_BATCH_SIZE": "40", "HUB_BROADCAST_CONCURRENCY": "8"}])
async def test_two_processes_share_the_batches_and_one_stopping_half_way_loses_and_doubles_nothing(
        hub_env, sink):
    settings = load_settings(hub_env)
    first = HubServer(settings)
    await first.start()
    second = HubServer(settings, mongo_client=None if MONGODB_URI else first.hub.mongo_client)
    await second.start()
    running = [first, second]
    try:
        handled = Counter()
        for n, server in enumerate(running):
            server.hub.services.broadcasts.on_processed = lambda outcome, count, n=n: handled.update({n: count})
        api = Api(f"http://127.0.0.1:{first.port}")
        users = await stored_users(first.hub, 2_000)
        await topic_with(api, "everyone", [u["_id"] for u in users])
        sink.stall_next(0.02, count=10_000)
        bid = await start_broadcast(api, announcement({"topic": "everyone"}, channels=["email"]))
        # Both processes take batches (the group's partitions are shared once both joined).
        await eventually(lambda: handled[0] > 0 and handled[1] > 0, 120, interval=0.05, what="both under way")
        assert (await progress(api, bid))["processed"] < 2_000
        running.remove(first)
        await first.stop()  # half-way: its partitions go to the second process
        api = Api(f"http://127.0.0.1:{second.port}")
        done = await finished(api, bid, timeout=180)
        assert done["processed"] == 2_000 and done["counts"]["email"].get("sent", 0) + \
            done["counts"]["email"].get("queued", 0) == 2_000
        # What the first left leased (stored, not yet sent) is taken up once its lease runs
        # out; "time passing" is simulated by making those jobs due now (only now: the
        # second's own jobs are leased while it works, and its lease does not run out either).
        store = second.hub.stores.notifications
        await store.jobs.update_many({}, {"$set": {"due_at": datetime.now(timezone.utc)}})
        await sink.wait_for(2_000, timeout=60)
        await quietly(2.0, lambda: len(sink.messages) == 2_000)
        by_address = _recipients(sink)
        assert set(by_address) == {u["email"] for u in users} and set(by_address.values()) == {1}
        assert await store.col.count_documents({"broadcast_id": bid}) == 2_000
        assert handled[0] + handled[1] == 2_000
    finally:
        if MONGODB_URI:  # while a client is still open
            await second.hub.mongo_client.drop_database(hub_env["MONGODB_DB"])
        for server in running:
            await server.stop()


@pytest.mark.timeout(60)
async def test_content_is_rendered_per_locale_once_but_per_user_when_the_template_names_the_user(api, hub_server,
                                                                                                  sink):
    admin = await api.admin_token()
    r = await api.call("PUT", "/api/v1/templates/flash_sale/email", {
        "locale": "de", "subject": "Hallo {{ user.name }}: {{ title }}", "text": "{{ body }}",
        "html": "<p>{{ rendered_body }}</p>"}, token=admin)
    assert r.status == 200, r
    english = await stored_users(hub_server.hub, 3)
    german = await stored_users(hub_server.hub, 2, locale="de")
    bid = await start_broadcast(api, announcement({"user_ids": [u["_id"] for u in english + german]},
                                                  channels=["email"]))
    await finished(api, bid, timeout=30)
    messages = await sink.wait_for(5, timeout=10)
    subjects = {m["To"]: m["Subject"] for m in messages}
    assert {subjects[u["email"]] for u in english} == {"Flash sale"}
    assert {subjects[u["email"]] for u in german} == {f"Hallo {u['name']}: Flash sale" for u in german}


@pytest.mark.timeout(60)
async def test_frequency_caps_hold_broadcast_messages_over_the_cap(api, hub_server, sink):
    capped = await stored_users(hub_server.hub, 3, preferences={"frequency": {"max_per_hour": 1, "max_per_day": 5}})
    free = await stored_users(hub_server.hub, 3)
    audience = {"user_ids": [u["_id"] for u in capped + free]}
    first = await start_broadcast(api, announcement(audience, channels=["email"]))
    assert (await finished(api, first, timeout=30))["counts"] == {"email": {"sent": 6}}
    second = await start_broadcast(api, announcement(audience, channels=["email"], title="Second"))
    done = await finished(api, second, timeout=30)
    assert done["counts"] == {"email": {"sent": 3, "held": 3}}
    store = hub_server.hub.stores.notifications
    for user in capped:
        doc = await store.col.find_one({"broadcast_id": second, "user_id": user["_id"]})
        assert doc["deliveries"]["email"]["status"] == "held"
        assert doc["deliveries"]["email"]["reason"] == "frequency_cap"
    await sink.wait_for(9, timeout=10)
    await quietly(1.0, lambda: len(sink.messages) == 9)
