"""The admin's topics and broadcasts pages (docs/web.md, docs/notifications.md) in headless
Chromium: topics listed with their member counts; a broadcast composed in the form; its
progress bar and per-channel counts moving live, pushed over the admin's WebSocket
(`broadcast.progress` on `admin:orders`), not polled; cancel stops it.

Fixtures and helpers are those of tests/test_web_browser.py (Chromium from the distribution)."""

from __future__ import annotations

import re

import pytest

from tests.broadcast_e2e import SERVICE, stored_users, topic_with
from tests.test_web_browser import (ADMIN_EMAIL, ADMIN_PASSWORD, browser, expect, extra_env,  # noqa: F401
                                    hub_env, live, people, pytestmark, push, shot, sign_in, sink, twilio)


@pytest.mark.parametrize("extra_env", [{"HUB_DEMO": "1", "HUB_BROADCAST_BATCH_SIZE": "25"}])
async def test_the_admin_composes_a_broadcast_and_watches_it_live(hub_server, api, people, sink):
    hub = hub_server.hub
    members = await stored_users(hub, 300)
    await topic_with(api, "spring", [u["_id"] for u in members])
    sink.stall_next(0.1, count=10_000)  # mail that takes a while: the bar moves in steps

    admin = await people.open("admin")
    await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    await admin.get_by_role("link", name="Broadcasts").click()
    await expect(admin.get_by_role("heading", name="Admin: broadcasts")).to_be_visible()
    await live(admin)
    await expect(admin.locator('tr[data-topic="spring"] .members')).to_have_text("300")

    # Validation errors are explained.
    people.allow(422)
    await admin.get_by_label("Audience").select_option(label="Topic: spring (300)")
    await admin.get_by_role("button", name="Send broadcast").click()
    await expect(admin.get_by_role("alert")).to_contain_text("The broadcast was not sent.")

    await admin.get_by_label("Title").fill("Spring sale")
    await admin.get_by_label("Message").fill("Everything 20% off this weekend")
    await admin.get_by_label("push").uncheck()
    await admin.get_by_role("button", name="Send broadcast").click()
    item = admin.locator("li.broadcast").filter(has_text="Spring sale")
    await expect(item).to_have_count(1)
    # Progress arrives as pushed frames while it runs, then it is done.
    await expect(item.locator(".progress-text")).to_have_text(re.compile(r"^running: [1-9]\d* of 300"), timeout=30_000)
    await expect(item).to_have_attribute("data-status", "done", timeout=60_000)
    await expect(item.locator(".progress-text")).to_have_text("done: 300 of 300")
    await expect(item.locator('[data-channel="email"]')).to_have_text("email: 300 sent")
    await expect(item.locator('[data-channel="websocket"]')).to_have_text("websocket: 300 sent")
    await expect(item.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)
    await shot(admin, "admin-broadcasts")
    listed = (await api.call("GET", "/api/v1/broadcasts", headers=SERVICE)).data["items"]
    assert [(b["title"], b["status"], b["audience"]) for b in listed] == [("Spring sale", "done", {"topic": "spring"})]

    # A second one to everyone, cancelled from the page half-way.
    await stored_users(hub, 700)
    await admin.get_by_label("Audience").select_option(label="Everyone")
    await admin.get_by_label("Title").fill("Clearance")
    await admin.get_by_label("Message").fill("Last items")
    await admin.get_by_role("button", name="Send broadcast").click()
    item = admin.locator("li.broadcast").filter(has_text="Clearance")
    await expect(item.locator(".progress-text")).to_have_text(re.compile(r"^running: [1-9]\d* of \d+"), timeout=30_000)
    await item.get_by_role("button", name=re.compile("^Cancel")).click()
    await expect(item).to_have_attribute("data-status", "cancelled")
    await expect(item.locator(".progress-text")).to_have_text(re.compile(r"skipped"), timeout=30_000)
    [cancelled] = [b for b in (await api.call("GET", "/api/v1/broadcasts", headers=SERVICE)).data["items"]
                   if b["title"] == "Clearance"]
    assert cancelled["status"] == "cancelled" and cancelled["skipped"] > 0
    assert cancelled["channels"] == ["email", "push", "websocket"]  # the form went back to its defaults
