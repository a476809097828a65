"""Storage behaviour the auth rules rely on, run against each document store (the embedded
one, SecantusDB, and MongoDB when MONGODB_URI is set: tests/conftest.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.errors import Conflict
from hub.adapters.mongo import connect_mongo
from hub.stores.login_failures import LoginFailureStore
from hub.stores.refresh_tokens import RefreshTokenStore
from hub.stores.users import UserStore
from config.settings import load_settings

pytestmark = [pytest.mark.stores]
NOW = datetime.now(timezone.utc)


@pytest.fixture
async def db(hub_env):
    client = connect_mongo(load_settings(hub_env))
    database = client[hub_env["MONGODB_DB"]]
    yield database
    await client.drop_database(hub_env["MONGODB_DB"])
    await client.close()


def a_user(email="u@example.com"):
    return {"_id": uuid.uuid4().hex, "email": email, "password_hash": "x", "roles": ["customer"],
            "created_at": NOW}


async def test_unique_email_under_concurrent_inserts(db):
    users = UserStore(db)
    await users.create_indexes()
    results = await asyncio.gather(*(users.insert(a_user("same@example.com")) for _ in range(5)), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, Conflict) and r.code == "email_taken" for r in results if r is not None)
    assert await db["users"].count_documents({"email": "same@example.com"}) == 1


async def test_concurrent_failures_lock_exactly_once(db):
    failures = LoginFailureStore(db)
    await failures.create_indexes()
    until = NOW + timedelta(minutes=15)
    locks = await asyncio.gather(*(failures.record_failure("u@example.com", "192.0.2.1", 5, until) for _ in range(5)))
    assert locks.count(True) == 1
    stored = await failures.get("u@example.com", "192.0.2.1")
    assert stored["failures"] == 0 and stored["locked_until"] is not None
    assert await failures.get("u@example.com", "192.0.2.2") is None  # another client address: no lock
    await failures.clear("u@example.com", "192.0.2.1")
    assert await failures.get("u@example.com", "192.0.2.1") is None


async def test_a_refresh_token_is_consumed_once_even_when_raced(db):
    tokens = RefreshTokenStore(db)
    await tokens.create_indexes()
    await tokens.insert(digest="d1", user_id="u", family="f", created_at=NOW, expires_at=NOW + timedelta(days=1))
    winners = await asyncio.gather(*(tokens.consume("d1", NOW) for _ in range(5)))
    assert sum(w is not None for w in winners) == 1
    assert await tokens.consume("d1", NOW) is None


async def test_expired_or_revoked_tokens_are_not_consumed(db):
    tokens = RefreshTokenStore(db)
    await tokens.insert(digest="old", user_id="u", family="f1", created_at=NOW, expires_at=NOW - timedelta(seconds=1))
    await tokens.insert(digest="a", user_id="u", family="f2", created_at=NOW, expires_at=NOW + timedelta(days=1))
    await tokens.insert(digest="b", user_id="u", family="f2", created_at=NOW, expires_at=NOW + timedelta(days=1))
    assert await tokens.consume("old", NOW) is None
    await tokens.revoke_family("f2")
    assert await tokens.consume("a", NOW) is None and await tokens.consume("b", NOW) is None
