"""Users and auth over real HTTP against an in-process hub (CONTRACT §2 "Users and auth")."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from config.settings import load_settings
from hub.wiring.server import HubServer
from tests.conftest import SERVICE_KEY, Api



async def test_register_returns_user_and_tokens_and_me_works(api):
    r = await api.call("POST", "/api/v1/auth/register", {
        "email": "  Alice@Example.COM ", "password": "correct-horse", "name": "Alice",
        "phone": "+1 555 123 4567", "timezone": "Europe/Paris", "locale": "fr",
    })
    assert r.status == 201, r
    user = r.data["user"]
    assert user["email"] == "alice@example.com"
    assert user["phone"] == "+15551234567"
    assert user["roles"] == ["customer"]
    assert {"id", "email", "name", "phone", "timezone", "locale", "roles"} <= user.keys()
    assert isinstance(user["id"], str)
    assert "password_hash" not in user and "password" not in user
    me = await api.call("GET", "/api/v1/users/me", token=r.data["access_token"])
    assert me.status == 200 and me.data["id"] == user["id"] and me.data["timezone"] == "Europe/Paris"


@pytest.mark.stores
async def test_email_is_unique_case_insensitively(api):
    await api.register("bob@example.com")
    again = await api.call("POST", "/api/v1/auth/register", {"email": "BOB@example.com", "password": "another-pass"})
    assert again.status == 409 and again.error_code == "email_taken"


@pytest.mark.stores
async def test_two_racing_registrations_give_one_201_and_one_409(api):
    body = {"email": "race@example.com", "password": "correct-horse"}
    results = await asyncio.gather(*(api.call("POST", "/api/v1/auth/register", body) for _ in range(2)))
    assert sorted(r.status for r in results) == [201, 409]


async def test_login_with_right_and_wrong_password(api):
    await api.register("carol@example.com", "correct-horse")
    ok = await api.call("POST", "/api/v1/auth/login", {"email": "Carol@Example.com", "password": "correct-horse"})
    assert ok.status == 200 and ok.data["user"]["email"] == "carol@example.com"
    assert ok.data["access_token"] and ok.data["refresh_token"]
    bad = await api.call("POST", "/api/v1/auth/login", {"email": "carol@example.com", "password": "wrong-horse"})
    assert bad.status == 401 and bad.error_code == "invalid_credentials"
    unknown = await api.call("POST", "/api/v1/auth/login", {"email": "nobody@example.com", "password": "correct-horse"})
    assert unknown.status == 401 and unknown.error_code == "invalid_credentials"


@pytest.mark.stores
async def test_lockout_after_five_failures_for_fifteen_minutes(api, hub_server):
    await api.register("dave@example.com", "correct-horse")
    for _ in range(5):
        r = await api.call("POST", "/api/v1/auth/login", {"email": "dave@example.com", "password": "nope-nope"})
        assert r.status == 401
    locked = await api.call("POST", "/api/v1/auth/login", {"email": "dave@example.com", "password": "correct-horse"})
    assert locked.status == 423 and locked.error_code == "account_locked"
    retry_after = int(locked.headers["Retry-After"])
    assert 14 * 60 < retry_after <= 15 * 60 + 1

    # Fifteen minutes later (moved back in the store rather than waited for) it opens again.
    failures = hub_server.hub.db["login_failures"]
    await failures.update_one({"email": "dave@example.com"},
                              {"$set": {"locked_until": datetime.now(timezone.utc) - timedelta(seconds=1)}})
    ok = await api.call("POST", "/api/v1/auth/login", {"email": "dave@example.com", "password": "correct-horse"})
    assert ok.status == 200


async def test_success_resets_the_failure_count(api):
    await api.register("erin@example.com", "correct-horse")
    for _ in range(4):
        await api.call("POST", "/api/v1/auth/login", {"email": "erin@example.com", "password": "nope-nope"})
    assert (await api.call("POST", "/api/v1/auth/login", {"email": "erin@example.com", "password": "correct-horse"})).status == 200
    for _ in range(4):
        await api.call("POST", "/api/v1/auth/login", {"email": "erin@example.com", "password": "nope-nope"})
    assert (await api.call("POST", "/api/v1/auth/login", {"email": "erin@example.com", "password": "correct-horse"})).status == 200


@pytest.mark.stores
async def test_refresh_rotates_and_reuse_revokes_the_family(api):
    session = await api.register()
    first = session["refresh_token"]
    r1 = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": first})
    assert r1.status == 200 and r1.data["refresh_token"] != first
    second = r1.data["refresh_token"]
    me = await api.call("GET", "/api/v1/users/me", token=r1.data["access_token"])
    assert me.status == 200

    # The used token is dead, and presenting it again signs out the whole family...
    reuse = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": first})
    assert reuse.status == 401 and reuse.error_code == "refresh_token_reused"
    # ...including the token that was issued from it.
    after = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": second})
    assert after.status == 401 and after.error_code == "invalid_refresh_token"


async def test_refresh_family_is_per_sign_in(api):
    session = await api.register("frank@example.com")
    other = await api.call("POST", "/api/v1/auth/login", {"email": "frank@example.com", "password": "correct-horse"})
    await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": session["refresh_token"]})
    await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": session["refresh_token"]})  # reuse: family 1 dies
    # The other device's sign-in is another family and keeps working.
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": other.data["refresh_token"]})
    assert r.status == 200


async def test_garbage_refresh_token(api):
    r = await api.call("POST", "/api/v1/auth/refresh", {"refresh_token": "not-a-token"})
    assert r.status == 401 and r.error_code == "invalid_refresh_token"


async def test_patch_me_changes_only_allowed_fields(api):
    session = await api.register()
    token = session["access_token"]
    r = await api.call("PATCH", "/api/v1/users/me",
                       {"name": "New Name", "timezone": "America/New_York", "locale": "pt-BR", "roles": ["admin"],
                        "email": "hijack@example.com"}, token=token)
    assert r.status == 200, r
    assert r.data["name"] == "New Name" and r.data["timezone"] == "America/New_York" and r.data["locale"] == "pt-BR"
    assert r.data["roles"] == ["customer"] and r.data["email"] == session["user"]["email"]

    bad = await api.call("PATCH", "/api/v1/users/me", {"timezone": "Mars/Olympus", "phone": "12"}, token=token)
    assert bad.status == 422
    fields = {d["field"] for d in bad.data["error"]["details"]}
    assert fields == {"timezone", "phone"}
    null_tz = await api.call("PATCH", "/api/v1/users/me", {"timezone": None}, token=token)
    assert null_tz.status == 422
    me = await api.call("GET", "/api/v1/users/me", token=token)
    assert me.data["timezone"] == "America/New_York"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not.a.jwt", "Basic abc", "Bearer " + "x" * 40])
async def test_me_requires_a_valid_token(api, header):
    r = await api.call("GET", "/api/v1/users/me", headers={"Authorization": header} if header else {})
    assert r.status == 401 and r.data["error"]["code"] in {"authentication_required", "invalid_token"}


async def test_token_signed_with_another_secret_or_expired_is_refused(api, hub_server):
    import jwt

    session = await api.register()
    claims = jwt.decode(session["access_token"], options={"verify_signature": False})
    forged = jwt.encode({**claims, "roles": ["admin"]}, "another-secret-of-enough-length-123456", algorithm="HS256")
    assert (await api.call("GET", "/api/v1/users/me", token=forged)).error_code == "invalid_token"
    expired = jwt.encode({**claims, "exp": claims["iat"] - 1}, hub_server.settings.jwt_secret, algorithm="HS256")
    r = await api.call("GET", "/api/v1/users/me", token=expired)
    assert r.status == 401 and r.error_code == "token_expired"


async def test_service_key_is_a_caller_but_not_a_user(api):
    r = await api.call("GET", "/api/v1/users/me", headers={"X-API-Key": SERVICE_KEY})
    assert r.status == 401 and r.error_code == "authentication_required"
    bad = await api.call("GET", "/api/v1/users/me", headers={"X-API-Key": "wrong"})
    assert bad.status == 401 and bad.error_code == "invalid_api_key"


async def test_bootstrap_admin_is_created_once_and_signs_in(hub_env):
    hub_env.update({"HUB_ADMIN_EMAIL": "Root@Example.com", "HUB_ADMIN_PASSWORD": "admin-password-1"})  # overrides the default
    first = HubServer(load_settings(hub_env))
    await first.start()
    try:
        api = Api(f"http://127.0.0.1:{first.port}")
        r = await api.call("POST", "/api/v1/auth/login", {"email": "root@example.com", "password": "admin-password-1"})
        assert r.status == 200 and "admin" in r.data["user"]["roles"]
        # A second start against the same store (as a second process would) does not duplicate it.
        await first.hub.services.accounts.ensure_admin("root@example.com", "admin-password-1")
        assert await first.hub.db["users"].count_documents({"email": "root@example.com"}) == 1
    finally:
        await first.stop()


async def test_auth_endpoints_are_rate_limited_per_ip(hub_env):
    hub_env["HUB_AUTH_RATE_PER_IP"] = "3"
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        body = {"email": "rl@example.com", "password": "whatever-1"}
        statuses = [(await api.call("POST", "/api/v1/auth/login", body)) for _ in range(4)]
        assert [r.status for r in statuses[:3]] == [401, 401, 401]
        assert statuses[3].status == 429 and statuses[3].error_code == "rate_limited"
        assert 1 <= int(statuses[3].headers["Retry-After"]) <= 61
    finally:
        await server.stop()
