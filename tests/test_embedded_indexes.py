"""The embedded store's indexes and quick paths (hub/adapters/embedded_indexes.py) never change an
answer: the same random writes go to a collection with declared indexes and to one without,
and every query, sort and page answers in both as mongomock's own filter and sort would."""

from __future__ import annotations

import random
import re

import mongomock
import pytest
from mongomock.filtering import filter_applies, resolve_sort_key
from pymongo.errors import DuplicateKeyError

from hub.adapters import embedded_indexes
from hub.adapters.embedded_mongo import _index_id_lookups, embedded_client

_index_id_lookups()
embedded_indexes.install()

WORDS = ["mug", "lamp", "chair", "desk", "Pen", "a.b", "cup+", "plate"]


def make_pair():
    db = mongomock.MongoClient(tz_aware=True)["indexes"]
    indexed, plain = db["indexed"], db["plain"]
    indexed.create_index("slug", unique=True)
    indexed.create_index([("user_id", 1), ("created_at", -1)])
    indexed.create_index("holds.id")
    indexed.create_index("text")
    indexed.create_index("n")
    plain.create_index("slug", unique=True)
    return indexed, plain


def random_doc(rng: random.Random, i: int) -> dict:
    doc = {"_id": f"d{i}", "slug": f"s{i}", "user_id": rng.choice(["u1", "u2", "u3", 7]),
           "created_at": i, "n": rng.choice([1, 1.0, 2, True, "1", None]),
           "text": " ".join(rng.sample(WORDS, 3)).lower(),
           "holds": [{"id": f"h{rng.randint(0, 5)}", "qty": 1} for _ in range(rng.randint(0, 2))],
           "deleted": rng.choice([False, False, True, 0])}
    if rng.random() < 0.2:
        del doc["user_id"]
    return doc


def random_query(rng: random.Random) -> dict:
    return rng.choice([
        {"user_id": rng.choice(["u1", "u2", "u3", 7, "nobody"])},
        {"user_id": {"$in": ["u1", 7]}, "created_at": {"$gte": rng.randint(0, 50)}},
        {"user_id": {"$eq": "u2"}},
        {"user_id": rng.choice(["u1", "u2"]), "n": 1},
        {"n": rng.choice([1, 1.0, 2, "1", True])},
        {"holds.id": f"h{rng.randint(0, 5)}"},
        {"holds.id": {"$ne": "h1"}, "user_id": "u3"},
        {"slug": f"s{rng.randint(0, 80)}"},
        {"text": {"$regex": re.escape(rng.choice(WORDS).lower())}},
        {"text": {"$regex": re.escape(rng.choice(["ug", "mug lamp", "a.b", "cup+", "zzz"]))}},
        {"text": {"$regex": "mu.", "$options": "i"}},
        {"user_id": {"$in": []}},
        {"n": {"$lt": 2}, "text": {"$regex": "mug"}},
        {"created_at": {"$gte": rng.randint(0, 100)}, "user_id": rng.choice(["u1", 7])},
        {"deleted": False},
        {"user_id": rng.choice(["u1", "u2"]), "slug": {"$in": [f"s{rng.randint(0, 60)}" for _ in range(30)]}},
        {"n": {"$in": [1, 2]}},
        {"_id": {"$in": [f"d{rng.randint(0, 130)}" for _ in range(6)] + ["d3", "nobody", 7]}},
        {"_id": {"$in": [f"new{rng.randint(0, 20)}", "d1", "d2"]}, "user_id": rng.choice(["u1", "u3"])},
        {"text": {"$in": ["mug", 1]}},
        {},
    ])


def expected(col, query: dict, sort=None, skip=0, limit=0) -> list:
    """What mongomock itself answers: its filter over every document, its sort keys."""
    documents = [d for d in col._store._documents.values() if filter_applies(query, d)]
    for key, direction in reversed(sort or []):
        documents = sorted(documents, key=lambda d, k=key: resolve_sort_key(k, d), reverse=direction < 0)
    documents = documents[skip:]
    return documents[:limit] if limit else documents


def random_write(rng: random.Random, col, i: int) -> None:
    target = {"_id": f"d{rng.randint(0, i)}"}
    kind = rng.randrange(9)
    if kind == 0:
        col.update_one(target, {"$set": {"user_id": rng.choice(["u1", "u2", "u3"]), "n": rng.choice([1, 2])}})
    elif kind == 1:
        col.update_many({"user_id": "u1"}, {"$set": {"user_id": "u2"}})
    elif kind == 2:
        col.update_one(target, {"$push": {"holds": {"id": f"h{rng.randint(0, 5)}", "qty": 2}}})
    elif kind == 3:
        col.update_one({"holds.id": "h2"}, {"$pull": {"holds": {"id": "h2"}}})
    elif kind == 4:
        col.delete_one({"user_id": rng.choice(["u1", "u3"])})
    elif kind == 5:
        col.find_one_and_update(target, {"$set": {"text": " ".join(rng.sample(WORDS, 2)).lower()}})
    elif kind == 6:
        col.replace_one(target, random_doc(rng, rng.randint(0, i)) | target)
    elif kind == 7:
        col.update_one({"_id": f"new{rng.randint(0, 20)}"}, {"$set": {"user_id": "u3", "slug": f"up{i}"}}, upsert=True)
    else:  # often a duplicate slug: refused and rolled back
        col.update_one(target, {"$set": {"slug": f"s{rng.randint(0, i)}", "user_id": "u9"}})


@pytest.mark.parametrize("seed", range(6))
def test_indexed_queries_answer_like_a_scan(seed):
    rng = random.Random(seed)
    indexed, plain = make_pair()
    for i in range(120):
        doc = random_doc(rng, i)
        for col in (indexed, plain):
            col.insert_one(dict(doc, holds=[dict(h) for h in doc["holds"]]))
        if i % 3 == 0:
            state = rng.getstate()
            for col in (indexed, plain):
                rng.setstate(state)
                try:  # both collections have the unique slug index: both refuse alike
                    random_write(rng, col, i)
                except DuplicateKeyError:
                    pass
        query = random_query(rng)
        assert list(indexed.find(query)) == list(plain.find(query)) == expected(plain, query), query
        assert indexed.count_documents(query) == plain.count_documents(query) == len(expected(plain, query)), query
        sort = rng.choice([[("created_at", -1)], [("text", 1), ("_id", 1)], [("n", 1), ("_id", -1)],
                           [("user_id", -1), ("created_at", 1)]])
        skip, limit = rng.choice([0, 0, 3]), rng.choice([0, 1, 5])
        want = expected(indexed, query, sort, skip, limit)
        assert list(indexed.find(query).sort(sort).skip(skip).limit(limit)) == want, (query, sort)
        assert indexed.find_one(query, sort=sort) == (expected(indexed, query, sort) or [None])[0], (query, sort)
    assert list(indexed.find()) == list(plain.find())


def test_lookups_read_candidates_not_every_document():
    indexed, _ = make_pair()
    indexed.insert_many([{"_id": i, "slug": f"s{i}", "user_id": f"u{i % 100}", "text": f"item {i}"} for i in range(2000)])
    indexes = embedded_indexes._indexes(indexed._store)
    assert len(indexes.candidates({"user_id": "u7"})) == 20
    assert [d["_id"] for d in indexes.candidates({"text": {"$regex": "item 1999"}})] == [1999]
    assert indexes.candidates({"price": 5}) is None  # not a declared field: scanned
    assert [d["_id"] for d in indexes.candidates({"_id": {"$in": [1500, 3, "x", 3]}})] == [3, 1500]
    assert indexed.count_documents({"user_id": "u7"}) == 20


def test_drop_and_reinsert_keep_the_index_right():
    indexed, _ = make_pair()
    indexed.insert_one({"_id": 1, "slug": "a", "user_id": "u1"})
    assert indexed.count_documents({"user_id": "u1"}) == 1
    indexed.drop()
    assert indexed.count_documents({"user_id": "u1"}) == 0
    indexed.create_index("user_id")
    indexed.insert_one({"_id": 1, "slug": "a", "user_id": "u2"})
    assert indexed.count_documents({"user_id": "u1"}) == 0
    assert indexed.count_documents({"user_id": "u2"}) == 1


async def test_an_update_a_unique_index_refuses_leaves_the_document_as_it_was():
    """mongomock rolls such an update back to the copy it took before (embedded_mongo's
    `_copy_document`): the copy must share no list or sub-document with what it changed."""
    products = embedded_client()["rollback"]["products"]
    await products.create_index("slug", unique=True)
    await products.insert_one({"_id": 1, "slug": "a", "holds": []})
    await products.insert_one({"_id": 2, "slug": "b", "holds": [{"id": "h1", "qty": 1}], "meta": {"tags": ["x"]}})
    with pytest.raises(DuplicateKeyError):
        await products.update_one({"_id": 2}, {"$set": {"slug": "a", "holds.0.qty": 5}, "$push": {"meta.tags": "y"}})
    assert await products.find_one({"_id": 2}) == {"_id": 2, "slug": "b", "holds": [{"id": "h1", "qty": 1}],
                                                   "meta": {"tags": ["x"]}}
