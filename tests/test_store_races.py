"""Races that only a networked store can show (the embedded store never interleaves two
calls): run on every store (tests/conftest.py `stores`), SecantusDB included."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest
from pymongo.errors import DuplicateKeyError

from config.settings import load_settings
from hub.adapters.mongo import connect_mongo
from hub.stores.payments import PaymentStore

pytestmark = [pytest.mark.timeout(60), pytest.mark.stores]
NOW = datetime.now(timezone.utc)


@pytest.fixture
async def db(mongo_uri):
    client = connect_mongo(load_settings({"MONGODB_URI": mongo_uri} if mongo_uri else {}))
    name = f"hub_races_{uuid.uuid4().hex[:10]}"
    yield client[name]

    async def drop():
        await client.drop_database(name)
        await client.close()
    await drop()


def event(kind: str) -> dict:
    return {"id": uuid.uuid4().hex, "type": f"payment.{kind}", "data": {"order_id": "o1"}}


async def test_a_success_and_a_failure_racing_to_create_one_payment_are_both_recorded(db):
    """Both create the payment document (an upsert); the one that loses the insert must
    still apply to the document the other created, as MongoDB's own retry would."""
    published = []
    payments = PaymentStore(db, published.append)
    await payments.create_indexes()
    keys = [f"adyen:psp_{n}" for n in range(20)]
    base = {"order_id": "o1", "provider": "adyen", "currency": "USD", "created_at": NOW}
    await asyncio.gather(*(
        call for key in keys for call in (
            payments.succeed(key, {**base, "payment_id": key}, 1250, [], f"{key}/ok", event("succeeded"), NOW),
            payments.fail(key, {**base, "payment_id": key}, 1250, "card_declined", f"{key}/ko", event("failed"), NOW))))
    for key in keys:
        doc = await db["payments"].find_one({"_id": key})
        assert doc["status"] == "succeeded", doc
        assert sorted(doc["applied_events"]) == [f"{key}/ko", f"{key}/ok"]
        assert [f["reason"] for f in doc["failures"]] == ["card_declined"]
        assert len(doc["outbox"]) == 2


class _LosesFirstInsert:
    """A collection on which the first upsert loses an insert race, the way MongoDB answers
    it: the competing event's document is stored, and this upsert gets E11000."""

    def __init__(self, collection, competitor) -> None:
        self._collection = collection
        self._competitor = competitor

    def __getattr__(self, name):
        return getattr(self._collection, name)

    async def find_one_and_update(self, *args, **kwargs):
        if self._competitor is not None:
            competitor, self._competitor = self._competitor, None
            await competitor()
            raise DuplicateKeyError("E11000 duplicate key error collection: payments index: _id_", 11000)
        return await self._collection.find_one_and_update(*args, **kwargs)


async def test_an_event_that_loses_the_insert_race_applies_to_the_document_that_won(db):
    payments = PaymentStore(db, lambda key: None)
    rival = PaymentStore(db, lambda key: None)
    base = {"order_id": "o1", "provider": "adyen", "payment_id": "psp_1", "currency": "USD", "created_at": NOW}
    payments.col = _LosesFirstInsert(payments.col, lambda: rival.fail(
        "adyen:psp_1", base, 1250, "card_declined", "ko", event("failed"), NOW))
    stored = await payments.succeed("adyen:psp_1", base, 1250, [], "ok", event("succeeded"), NOW)
    assert stored is not None and stored["status"] == "succeeded"
    doc = await db["payments"].find_one({"_id": "adyen:psp_1"})
    assert sorted(doc["applied_events"]) == ["ko", "ok"] and len(doc["failures"]) == 1 and len(doc["outbox"]) == 2
