"""One driver API on every store: PyMongo's async API (`AsyncMongoClient`), which the embedded
store (mongomock behind hub/adapters/embedded_mongo.py) matches where the hub could meet a
difference. Motor, past its end of life, is gone: a hub on the embedded store loads no module of
it, and requirements name neither it nor mongomock-motor (which imports it)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
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
        assert len(await db.things.find({}).to_list(4)) == 4  # at most `length`
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
    for requirements in ("requirements.txt", "requirements-dev.txt"):
        assert not re.search(r"(?im)^(mongomock-motor|mongomock_motor|motor)\b", (ROOT / requirements).read_text())
    # A process of its own: what this one has imported is not the hub's doing.
    script = textwrap.dedent("""
        import asyncio, sys
        import hub.wiring.main
        from config.settings import load_settings
        from hub.adapters.mongo import connect_mongo

        async def use():
            client = connect_mongo(load_settings({}))
            db = client["hub"]
            await db.things.insert_one({"_id": 1})
            assert [d async for d in db.things.find({}).sort("_id", 1).limit(1)] == [{"_id": 1}]
            await (await db.things.aggregate([])).to_list(None)
            await client.close()

        asyncio.run(use())
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("motor", "mongomock_motor")))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
