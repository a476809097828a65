"""Marketing email done right (RFC 8058; CONTRACT v2 §5): a marketing broadcast's emails
carry List-Unsubscribe with a signed link under HUB_PUBLIC_URL and List-Unsubscribe-Post;
a POST to the link turns marketing off for that user's email without signing in, after
which marketing emails are suppressed `preference`; a forged link, or one user's
signature on another user or category, is refused and changes nothing."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.broadcast_e2e import announcement, finished, start_broadcast
from tests.notify_e2e import PUBLIC_URL, deliveries, extra_env, hub_env, inbox, push, sink, twilio  # noqa: F401

pytestmark = pytest.mark.timeout(90)


async def _preferences(api, token: str) -> dict:
    r = await api.call("GET", "/api/v1/users/me/preferences", token=token)
    assert r.status == 200, r
    return r.data


def _local(api, link: str) -> str:
    """The link's path and query on the hub under test (HUB_PUBLIC_URL names another host)."""
    assert link.startswith(PUBLIC_URL + "/api/v1/unsubscribe?"), link
    return link[len(PUBLIC_URL):]


async def test_one_click_unsubscribe_from_a_marketing_email(api, sink):
    ann, bob = await api.register(), await api.register()
    bid = await start_broadcast(api, announcement({"user_ids": [ann["user"]["id"], bob["user"]["id"]]},
                                                  channels=["email"]))
    await finished(api, bid, timeout=30)
    messages = await sink.wait_for(2, timeout=10)
    mail = next(m for m in messages if m["To"] == ann["user"]["email"])
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = mail["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">"), header
    link = _local(api, header[1:-1])
    query = parse_qs(urlsplit(link).query)
    assert query["u"] == [ann["user"]["id"]] and query["c"] == ["marketing"]

    # Opening the link in a browser shows a button and changes nothing.
    r = await api.call("GET", link)
    assert r.status == 200 and "Unsubscribe" in str(r.data)
    assert (await _preferences(api, ann["access_token"]))["channels"]["email"]["types"] == ["all"]

    # What the mailbox provider sends (RFC 8058): a POST with this body, no credentials.
    r = await api.call("POST", link, body=b"List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and r.data["unsubscribed"] is True, r
    email_pref = (await _preferences(api, ann["access_token"]))["channels"]["email"]
    assert email_pref["enabled"] is True and "marketing" not in email_pref["types"] and "order" in email_pref["types"]
    r = await api.call("POST", link, body=b"List-Unsubscribe=One-Click")  # again: nothing more changes
    assert r.status == 200
    assert (await _preferences(api, ann["access_token"]))["channels"]["email"] == email_pref

    # The next marketing broadcast: Ann's email suppressed `preference`, Bob's sent.
    sink.messages.clear()
    bid = await start_broadcast(api, announcement({"user_ids": [ann["user"]["id"], bob["user"]["id"]]},
                                                  channels=["email", "websocket"], title="Second sale"))
    done = await finished(api, bid, timeout=30)
    assert done["counts"]["email"] == {"sent": 1, "suppressed": 1}
    [mail] = await sink.wait_for(1, timeout=10)
    assert mail["To"] == bob["user"]["email"]
    item = next(i for i in (await inbox(api, ann["access_token"]))["items"] if i["title"] == "Second sale")
    assert deliveries(item)["email"]["status"] == "suppressed" and deliveries(item)["email"]["reason"] == "preference"
    assert deliveries(item)["websocket"]["status"] == "sent"  # only email was unsubscribed

    # Order emails still reach her, without an unsubscribe header.
    sink.messages.clear()
    bid = await start_broadcast(api, announcement({"user_ids": [ann["user"]["id"]]}, channels=["email"],
                                                  category="order", type="order_delayed", title="Delayed"))
    await finished(api, bid, timeout=30)
    [mail] = await sink.wait_for(1, timeout=10)
    assert mail["To"] == ann["user"]["email"] and mail["List-Unsubscribe"] is None


async def test_forged_or_borrowed_signatures_are_refused_and_change_nothing(api, sink, hub_server):
    ann, bob = await api.register(), await api.register()
    links = hub_server.hub.services.unsubscribe_links
    good = parse_qs(urlsplit(links.url(bob["user"]["id"], "marketing")).query)["s"][0]
    forged = [
        {"u": ann["user"]["id"], "c": "marketing", "s": good},  # Bob's signature on Ann
        {"u": ann["user"]["id"], "c": "marketing", "s": "A" * 43},
        {"u": ann["user"]["id"], "c": "marketing", "s": ""},
        {"u": bob["user"]["id"], "c": "order", "s": good},  # Bob's signature on another category
        {"u": ann["user"]["id"], "c": "marketing"},
        {"u": ann["user"]["id"], "c": "nonsense", "s": good},
    ]
    for query in forged:
        r = await api.call("POST", f"/api/v1/unsubscribe?{urlencode(query)}", body=b"List-Unsubscribe=One-Click")
        assert 400 <= r.status < 500, (query, r)
        assert r.error_code == "invalid_signature"
    for user in (ann, bob):
        prefs = await _preferences(api, user["access_token"])
        assert prefs["channels"]["email"]["types"] == ["all"]
    r = await api.call("POST", f"/api/v1/unsubscribe?{urlencode({'u': bob['user']['id'], 'c': 'marketing', 's': good})}")
    assert r.status == 200
    assert "marketing" not in (await _preferences(api, bob["access_token"]))["channels"]["email"]["types"]
    assert (await _preferences(api, ann["access_token"]))["channels"]["email"]["types"] == ["all"]
