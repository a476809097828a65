"""The notification HTTP API against a running hub (CONTRACT §2 "Notifications"): the
inbox (read, read-all, unread counts, other users kept out), POST /api/v1/notifications
for services (auth, validation, idempotency, channel selection), and the admin templates
API (validation, overrides per locale used by the next delivery, removal).
"""

from __future__ import annotations

import uuid

import pytest

from tests.notify_e2e import extra_env, hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.notify_e2e import (SERVICE_KEY, customer, deliveries, inbox, inbox_item, placed, quietly,
                              request_notification)

pytestmark = [pytest.mark.stores]


def note(user_id: str, **extra) -> dict:
    return {"user_id": user_id, "type": "order_note", "title": "About your order", "body": "A word from the shop",
            **extra}


# The inbox ----------------------------------------------------------------------------------

async def test_read_one_read_all_and_unread_counts(api, sink):
    ann = await customer(api)
    ids = []
    for n in range(3):
        r = await request_notification(api, note(ann.id, title=f"Note {n}"))
        assert r.status == 202, r
        ids.append(r.data["id"])
    for nid in ids:
        await inbox_item(api, ann.token, nid)
    box = await inbox(api, ann.token)
    assert box["unread_count"] == 3
    assert {i["id"] for i in box["items"]} == set(ids)
    assert all(i["read_at"] is None for i in box["items"])

    r = await api.call("POST", f"/api/v1/users/me/notifications/{ids[0]}/read", token=ann.token)
    assert r.status == 200 and r.data["id"] == ids[0] and r.data["read_at"], r
    first_read_at = r.data["read_at"]
    r = await api.call("POST", f"/api/v1/users/me/notifications/{ids[0]}/read", token=ann.token)
    assert r.status == 200 and r.data["read_at"] == first_read_at  # reading again keeps the first time
    box = await inbox(api, ann.token)
    assert box["unread_count"] == 2
    assert {i["id"] for i in (await inbox(api, ann.token, "?unread=true"))["items"]} == set(ids[1:])
    assert [i["id"] for i in (await inbox(api, ann.token, "?unread=false"))["items"]] == [ids[0]]

    r = await api.call("POST", "/api/v1/users/me/notifications/read-all", token=ann.token)
    assert r.status == 200 and r.data["unread_count"] == 0 and r.data["updated"] == 2, r
    box = await inbox(api, ann.token)
    assert box["unread_count"] == 0 and all(i["read_at"] for i in box["items"])


async def test_another_user_can_neither_read_nor_see_it(api, sink):
    ann, bob = await customer(api), await customer(api)
    r = await request_notification(api, note(ann.id, title="For Ann only"))
    nid = r.data["id"]
    await inbox_item(api, ann.token, nid)

    r = await api.call("POST", f"/api/v1/users/me/notifications/{nid}/read", token=bob.token)
    assert r.status == 404 and r.error_code == "notification_not_found", r
    box = await inbox(api, bob.token)
    assert box["items"] == [] and box["unread_count"] == 0
    r = await api.call("POST", "/api/v1/users/me/notifications/read-all", token=bob.token)
    assert r.status == 200 and r.data["updated"] == 0
    assert (await inbox(api, ann.token))["unread_count"] == 1  # Bob's read-all left Ann's alone

    r = await api.call("GET", "/api/v1/users/me/notifications")
    assert r.status == 401, r
    r = await api.call("POST", f"/api/v1/users/me/notifications/{uuid.uuid4().hex}/read", token=ann.token)
    assert r.status == 404, r


# POST /api/v1/notifications -----------------------------------------------------------------

async def test_request_gives_the_inbox_id_and_validates(api, sink):
    ann = await customer(api)
    r = await request_notification(api, note(ann.id, data={"order_id": "o-1"}))
    assert r.status == 202 and set(r.data) == {"id"} and isinstance(r.data["id"], str), r
    item = await inbox_item(api, ann.token, r.data["id"])
    assert item["type"] == "order_note" and item["title"] == "About your order"
    assert item["data"] == {"order_id": "o-1"} and item["priority"] == "normal"

    for body, field in ((note(ann.id, priority="critical"), "priority"), (note(ann.id, title=""), "title"),
                        (note(ann.id, channels=["email", "pigeon"]), "channels"),
                        (note(ann.id, channels=[]), "channels"), ({"user_id": ann.id, "type": "x"}, "title")):
        r = await request_notification(api, body)
        assert r.status == 422, (body, r)
        assert r.error_code == "validation_failed"
        assert field in str(r.data["error"]["details"]), r

    r = await request_notification(api, note("no-such-user"))
    assert r.status == 404 and r.error_code == "user_not_found", r
    r = await api.call("POST", "/api/v1/notifications", note(ann.id))
    assert r.status == 401, r
    r = await api.call("POST", "/api/v1/notifications", note(ann.id), headers={"X-API-Key": "wrong-key-0000000000"})
    assert r.status == 401, r
    r = await api.call("POST", "/api/v1/notifications", note(ann.id), token=ann.token)
    assert r.status == 403, r
    r = await api.call("POST", "/api/v1/notifications", body=b"{not json",
                       headers={"X-API-Key": SERVICE_KEY, "Content-Type": "application/json"})
    assert r.status == 400, r

    admin = await api.admin_token()
    r = await api.call("POST", "/api/v1/notifications", note(ann.id, title="From an admin"), token=admin)
    assert r.status == 202, r
    assert (await inbox_item(api, ann.token, r.data["id"]))["title"] == "From an admin"
    assert len((await inbox(api, ann.token))["items"]) == 2  # the refused requests recorded nothing


async def test_idempotency_key_retry_gives_the_same_id_and_one_notification(api, sink):
    ann = await customer(api)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    first = await request_notification(api, note(ann.id, title="Only once", channels=["email"]), key)
    again = await request_notification(api, note(ann.id, title="Only once", channels=["email"]), key)
    assert first.status == again.status == 202
    assert first.data["id"] == again.data["id"]
    other = await request_notification(api, note(ann.id, title="Only once", channels=["email"]))
    assert other.data["id"] != first.data["id"]  # no key: a new notification

    await sink.wait_for(2)
    await quietly(1.5, lambda: len(sink.messages) == 2)
    items = (await inbox(api, ann.token))["items"]
    assert sorted(i["id"] for i in items) == sorted([first.data["id"], other.data["id"]])


async def test_channels_email_only_sends_email_only(api, hub_server, sink, push):
    ann = await customer(api)
    r = await api.call("POST", "/api/v1/users/me/push-subscriptions", push.new_subscription(), token=ann.token)
    assert r.status == 201, r
    r = await request_notification(api, note(ann.id, title="Email only", channels=["email"]))
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent",))
    assert set(deliveries(item)) == {"email"}
    [mail] = await sink.wait_for(1)
    assert mail["Subject"] == "Email only"
    await quietly(1.0, lambda: not push.received and not push.refused)


# Templates (admin) --------------------------------------------------------------------------

async def test_templates_list_is_admin_only(api):
    admin = await api.admin_token()
    ann = await customer(api)
    r = await api.call("GET", "/api/v1/templates", token=admin)
    assert r.status == 200, r
    order_email = [t for t in r.data["items"] if t["type"] == "order_created" and t["channel"] == "email"]
    assert order_email and order_email[0]["source"] == "default"
    assert set(order_email[0]["parts"]) == {"subject", "text", "html"}
    assert (await api.call("GET", "/api/v1/templates", token=ann.token)).status == 403
    assert (await api.call("GET", "/api/v1/templates")).status == 401
    r = await api.call("PUT", "/api/v1/templates/order_created/email", {"subject": "x", "text": "y", "html": "z"},
                       token=ann.token)
    assert r.status == 403, r


async def test_email_override_is_used_per_locale_and_removed(api, sink):
    admin = await api.admin_token()
    product = await api.product(admin)
    path = "/api/v1/templates/order_created/email"

    r = await api.call("PUT", path, {"subject": "Order {{ data.number", "text": "t", "html": "<p>h</p>"}, token=admin)
    assert r.status == 422 and r.error_code == "invalid_template", r
    assert [d["field"] for d in r.data["error"]["details"]] == ["subject"]
    r = await api.call("PUT", path, {"subject": "Order {{ data.number }}"}, token=admin)  # text and html missing
    assert r.status == 422 and r.error_code == "invalid_template", r

    r = await api.call("PUT", path, {"subject": "Thanks for order {{ data.number }}!",
                                     "text": "We got order {{ data.number }}.",
                                     "html": "<p>We got order <b>{{ data.number }}</b>.</p>"}, token=admin)
    assert r.status == 200 and r.data["source"] == "override:en", r
    r = await api.call("PUT", path, {"locale": "fr", "subject": "Merci pour la commande {{ data.number }} !",
                                     "text": "Commande {{ data.number }} reçue.",
                                     "html": "<p>Commande {{ data.number }} reçue.</p>"}, token=admin)
    assert r.status == 200 and r.data["source"] == "override:fr", r

    ann = await customer(api)
    marie = await customer(api, locale="fr-CA")  # falls back to fr
    ann_order = await placed(api, ann.token, product["id"])
    [mail] = await sink.wait_for(1, timeout=15)
    assert mail["Subject"] == f"Thanks for order {ann_order['number']}!"
    text, html = mail.iter_parts()
    assert text.get_content().strip() == f"We got order {ann_order['number']}."
    assert f"<b>{ann_order['number']}</b>" in html.get_content()

    marie_order = await placed(api, marie.token, product["id"])
    mails = await sink.wait_for(2, timeout=15)
    assert mails[1].rcpt_tos == [marie.email]
    assert mails[1]["Subject"] == f"Merci pour la commande {marie_order['number']} !"

    r = await api.call("DELETE", path, token=admin)
    assert r.status == 204, r
    r = await api.call("DELETE", path, token=admin)
    assert r.status == 404 and r.error_code == "template_not_found", r
    r = await api.call("GET", path, token=admin)
    assert r.data["source"] == "default"
    r = await api.call("GET", path + "?locale=fr", token=admin)
    assert r.data["source"] == "override:fr"

    again = await placed(api, ann.token, product["id"])
    mails = await sink.wait_for(3, timeout=15)
    assert mails[2]["Subject"] == f"Order {again['number']} received"  # the shipped default
