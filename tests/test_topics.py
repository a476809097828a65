"""Topics over real HTTP (CONTRACT v2 §5): bulk membership with duplicates and unknown ids,
idempotent adds and removes, counts, public topics users join and leave themselves, and
who may do what."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import SERVICE_KEY

pytestmark = pytest.mark.timeout(60)
SERVICE = {"X-API-Key": SERVICE_KEY}


async def _users(api, n: int) -> list[dict]:
    return [await api.register() for _ in range(n)]


async def test_bulk_membership_is_idempotent_and_lists_unknown_ids(api, hub_server):
    r = await api.call("PUT", "/api/v1/topics/flash-sale", {"name": "Flash sale"}, headers=SERVICE)
    assert r.status == 200, r
    assert r.data["key"] == "flash-sale" and r.data["name"] == "Flash sale" and r.data["subscribers"] == 0
    users = await _users(api, 3)
    ids = [u["user"]["id"] for u in users]
    ghost = uuid.uuid4().hex
    r = await api.call("POST", "/api/v1/topics/flash-sale/subscribers",
                       {"user_ids": [ids[0], ids[1], ids[0], ghost]}, headers=SERVICE)
    assert r.status == 200, r
    assert r.data["added"] == 2 and r.data["unknown"] == [ghost] and r.data["subscribers"] == 2
    # Again, with one more: only the new one is added.
    r = await api.call("POST", "/api/v1/topics/flash-sale/subscribers", {"user_ids": ids}, headers=SERVICE)
    assert r.data["added"] == 1 and r.data["unknown"] == [] and r.data["subscribers"] == 3
    r = await api.call("GET", "/api/v1/topics/flash-sale", headers=SERVICE)
    assert r.status == 200 and r.data["subscribers"] == 3 and r.data["name"] == "Flash sale"
    r = await api.call("DELETE", "/api/v1/topics/flash-sale/subscribers", {"user_ids": [ids[0], ids[0], ghost]},
                       headers=SERVICE)
    assert r.status == 200 and r.data["removed"] == 1 and r.data["unknown"] == [ghost]
    r = await api.call("DELETE", "/api/v1/topics/flash-sale/subscribers", {"user_ids": [ids[0]]}, headers=SERVICE)
    assert r.data["removed"] == 0 and r.data["subscribers"] == 2
    store = hub_server.hub.stores.topics
    assert sorted(await store.page("flash-sale", None, 10)) == sorted(ids[1:])


async def test_ten_thousand_ids_in_one_call_and_paged_reads(api, hub_server):
    await api.call("PUT", "/api/v1/topics/big", {}, headers=SERVICE)
    users = await _users(api, 5)
    ids = [u["user"]["id"] for u in users]
    unknown = [f"nobody-{i}" for i in range(10_000 - len(ids))]
    r = await api.call("POST", "/api/v1/topics/big/subscribers", {"user_ids": ids + unknown}, headers=SERVICE)
    assert r.status == 200, r
    assert r.data["added"] == 5 and len(r.data["unknown"]) == len(unknown)
    r = await api.call("POST", "/api/v1/topics/big/subscribers", {"user_ids": ids + unknown + ["one-more"]},
                       headers=SERVICE)
    assert r.status == 422, r  # over 10,000 ids
    store = hub_server.hub.stores.topics
    first = await store.page("big", None, 3)
    rest = await store.page("big", first[-1], 3)
    assert first + rest == sorted(ids)


async def test_public_topics_are_joined_and_left_by_users(api):
    await api.call("PUT", "/api/v1/topics/news", {"name": "News", "public": True}, headers=SERVICE)
    await api.call("PUT", "/api/v1/topics/vip", {"name": "VIP"}, headers=SERVICE)
    ann = await api.register()
    r = await api.call("POST", "/api/v1/users/me/topics/news", token=ann["access_token"])
    assert r.status == 200 and r.data["subscribed"] is True
    r = await api.call("POST", "/api/v1/users/me/topics/news", token=ann["access_token"])
    assert r.status == 200
    assert (await api.call("GET", "/api/v1/topics/news", headers=SERVICE)).data["subscribers"] == 1
    r = await api.call("POST", "/api/v1/users/me/topics/vip", token=ann["access_token"])
    assert r.status == 403 and r.error_code == "topic_not_public"
    assert (await api.call("GET", "/api/v1/topics/vip", headers=SERVICE)).data["subscribers"] == 0
    r = await api.call("POST", "/api/v1/users/me/topics/nope", token=ann["access_token"])
    assert r.status == 404
    r = await api.call("DELETE", "/api/v1/users/me/topics/news", token=ann["access_token"])
    assert r.status == 200 and r.data["subscribed"] is False
    assert (await api.call("GET", "/api/v1/topics/news", headers=SERVICE)).data["subscribers"] == 0


async def test_only_services_and_admins_manage_topics(api):
    ann = await api.register()
    r = await api.call("PUT", "/api/v1/topics/x", {"name": "X"}, token=ann["access_token"])
    assert r.status == 403
    r = await api.call("PUT", "/api/v1/topics/x", {"name": "X"})
    assert r.status == 401
    admin = await api.admin_token()
    r = await api.call("PUT", "/api/v1/topics/x", {"name": "X", "public": True}, token=admin)
    assert r.status == 200 and r.data["public"] is True
    r = await api.call("POST", "/api/v1/topics/x/subscribers", {"user_ids": [ann["user"]["id"]]},
                       token=ann["access_token"])
    assert r.status == 403
    r = await api.call("GET", "/api/v1/topics", token=admin)
    assert r.status == 200 and [t["key"] for t in r.data["items"]] == ["x"]
    assert (await api.call("PUT", "/api/v1/topics/" + "k" * 201, {}, token=admin)).status == 404  # no key is so long
    r = await api.call("POST", "/api/v1/topics/missing/subscribers", {"user_ids": ["a"]}, token=admin)
    assert r.status == 404 and r.error_code == "topic_not_found"
    r = await api.call("POST", "/api/v1/topics/x/subscribers", {"user_ids": []}, token=admin)
    assert r.status == 422
    r = await api.call("PUT", "/api/v1/topics/x", {"public": "yes"}, token=admin)
    assert r.status == 422
