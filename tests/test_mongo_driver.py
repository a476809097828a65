"""One driver API on every store: PyMongo's async API (`AsyncMongoClient`), which the embedded
store (mongomock, hub/adapters/mongo.py) matches where the hub could meet a difference. Motor, past
its end of life, is gone: nothing imports it and requirements do not name it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from config.settings import load_settings
from hub.adapters.mongo import connect_mongo, mongo_healthy

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.stores
async def test_the_shapes_the_hub_relies_on_are_the_same_on_every_store(mongo_uri):
    settings = load_settings({"MONGODB_URI": mongo_uri} if mongo_uri else {})
    client = connect_mongo(settings)
    name = f"hub_driver_{uuid.uuid4().hex[:10]}"
    db = client[name]
    try:
        assert await mongo_healthy(db)
        await db.things.insert_many([{"_id": n, "kind": "odd" if n % 2 else "even", "n": n} for n in range(6)])
        assert [d["_id"] async for d in db.things.find({"kind": "odd"}).sort("n", -1)] == [5, 3, 1]
        assert len(await db.things.find({}).to_list(None)) == 6  # None: every document
        assert await db.things.find({}).sort("n", 1).limit(2).to_list(2) == [
            {"_id": 0, "kind": "even", "n": 0}, {"_id": 1, "kind": "odd", "n": 1}]
        await db.things.create_index("kind", name="by_kind")
        indexes = await db.things.list_indexes()  # awaited for its cursor
        assert "by_kind" in [index["name"] async for index in indexes]
        cursor = await db.things.aggregate([{"$group": {"_id": "$kind", "total": {"$sum": "$n"}}}])
        assert sorted((d["_id"], d["total"]) for d in await cursor.to_list(None)) == [("even", 6), ("odd", 9)]
    finally:
        await client.drop_database(name)
        await client.close()  # a coroutine, on every store


def test_motor_is_gone():
    assert not re.search(r"(?im)^motor\b", (ROOT / "requirements.txt").read_text())
    sources = [p for top in ("hub", "handlers", "domain", "channels", "config", "tests", "bench") for p in
               (ROOT / top).rglob("*.py")] + [ROOT / "run.py"]
    importing = [str(p.relative_to(ROOT)) for p in sources
                 if re.search(r"(?m)^\s*(from|import)\s+motor\b", p.read_text())]
    assert importing == []
