"""Signing out of the web app ends the session on the server too (issue 12): the refresh
token the browser held is dead afterwards, so a copy taken from the device is worthless.
Headless Chromium as in tests/test_web_browser.py, whose fixtures this reuses."""

from __future__ import annotations

import json

import pytest

from domain.tokens import refresh_token_digest

from tests.notify_e2e import eventually, hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.test_web_browser import CHROMIUM, async_playwright, browser, extra_env, people, sign_in  # noqa: F401

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed (pip install -r requirements-dev.txt)"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: apt-get install chromium (or set HUB_TEST_CHROMIUM)"),
    pytest.mark.timeout(90),
    pytest.mark.slow,  # Chromium
]


async def test_sign_out_kills_the_refresh_token_the_browser_held(api, hub_server, people):
    await api.register("browser-user@example.com", "correct-horse-battery")
    page = await people.open("ann")
    await sign_in(page, "browser-user@example.com", "correct-horse-battery")
    stored = await page.evaluate("() => Object.values(localStorage).find((v) => v.includes('refresh_token'))")
    refresh_token = json.loads(stored)["refresh_token"]

    await page.locator("#sign-out").click()
    await page.wait_for_function("() => !document.querySelector('#sign-out')")

    # The logout request is sent without waiting for it: wait for its effect, then try once
    # (a second refresh with the same token would be refused anyway, as reuse).
    tokens = hub_server.hub.db["refresh_tokens"]
    digest = refresh_token_digest(refresh_token)
    await eventually(lambda: tokens.find_one({"_id": digest, "revoked": True}), 10, what="the session revoked")
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": refresh_token})
    assert r.status == 401 and r.error_code == "invalid_refresh_token", r
