"""The embedded document store: mongomock's synchronous client behind the shapes of PyMongo's
async API (AsyncMongoClient), so the code above sees one API on every store. Only the calls
the hub makes are here. Every call runs to its end without yielding to the event loop, as
mongomock's do (tests/conftest.py's _Yielding adds a networked store's yields where a test
needs them)."""

from __future__ import annotations

import copy
import itertools
import time
import types
from datetime import datetime
from decimal import Decimal

import mongomock
from bson import Decimal128, ObjectId

from hub.adapters import embedded_indexes


def embedded_client() -> "EmbeddedClient":
    _index_id_lookups()
    _bulk_updates_take_sort()
    _documents_copied_plainly()
    embedded_indexes.install()
    return EmbeddedClient(tz_aware=True)


def _calling(name: str):
    """A coroutine method that calls the wrapped mongomock object's method `name`."""
    async def call(self, *args, **kwargs):
        return getattr(self._sync, name)(*args, **kwargs)
    call.__name__ = call.__qualname__ = name
    return call


def _chaining(name: str):
    """A cursor option (sort, limit...): set on mongomock's cursor; returns this cursor."""
    def chain(self, *args, **kwargs):
        getattr(self._sync, name)(*args, **kwargs)
        return self
    chain.__name__ = chain.__qualname__ = name
    return chain


class EmbeddedCommandCursor:
    """What aggregate() and list_indexes() are awaited for: `async for` and to_list()."""

    def __init__(self, documents) -> None:
        self._sync = iter(documents)

    def __aiter__(self):
        return self

    async def next(self):
        try:
            return next(self._sync)
        except StopIteration:
            raise StopAsyncIteration from None

    __anext__ = next

    async def to_list(self, length: int | None = None) -> list:
        """At most `length` documents (None: all the rest), as PyMongo's."""
        return list(itertools.islice(self._sync, length))

    async def close(self) -> None:
        """Nothing to release."""


class EmbeddedCursor(EmbeddedCommandCursor):
    """find()'s cursor: options chained before the first document is read."""

    def __init__(self, cursor) -> None:
        self._sync = cursor


for _name in ("sort", "skip", "limit"):
    setattr(EmbeddedCursor, _name, _chaining(_name))


class EmbeddedCollection:
    def __init__(self, collection) -> None:
        self._sync = collection

    def find(self, *args, **kwargs) -> EmbeddedCursor:
        return EmbeddedCursor(self._sync.find(*args, **kwargs))

    async def aggregate(self, pipeline, **kwargs) -> EmbeddedCommandCursor:
        return EmbeddedCommandCursor(self._sync.aggregate(pipeline, **kwargs))

    async def list_indexes(self) -> EmbeddedCommandCursor:
        return EmbeddedCommandCursor(self._sync.list_indexes())


for _name in ("insert_one", "insert_many", "find_one", "find_one_and_update", "update_one", "update_many",
              "replace_one", "delete_one", "delete_many", "bulk_write", "count_documents", "create_index"):
    setattr(EmbeddedCollection, _name, _calling(_name))


class EmbeddedDatabase:
    def __init__(self, database) -> None:
        self._sync = database

    def __getitem__(self, name: str) -> EmbeddedCollection:
        return EmbeddedCollection(self._sync[name])

    def __getattr__(self, name: str) -> EmbeddedCollection:
        """`db.orders` as PyMongo has it."""
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]


for _name in ("command", "list_collection_names"):
    setattr(EmbeddedDatabase, _name, _calling(_name))


class EmbeddedClient:
    def __init__(self, **options) -> None:
        self._sync = mongomock.MongoClient(**options)

    def __getitem__(self, name: str) -> EmbeddedDatabase:
        return EmbeddedDatabase(self._sync[name])

    async def drop_database(self, name: str) -> None:
        self._sync.drop_database(name)

    async def close(self) -> None:
        """Nothing to release: the data lives in this process, for as long as it runs."""


def _bulk_updates_take_sort() -> None:
    """PyMongo's UpdateOne hands a bulk write a `sort` (MongoDB 8) that mongomock's bulk
    builder does not know: taken, and ignored unless given (this code never sorts one)."""
    from mongomock.collection import BulkOperationBuilder

    add_update = BulkOperationBuilder.add_update
    if getattr(add_update, "takes_sort", False):
        return

    def with_sort(self, selector, doc, multi=False, upsert=False, sort=None, **options):
        if sort is not None:
            raise NotImplementedError("a sorted update in a bulk write")
        return add_update(self, selector, doc, multi, upsert, **options)

    with_sort.takes_sort = True
    BulkOperationBuilder.add_update = with_sort


# What a stored document holds that never changes in place: shared by a copy, not copied.
_SHARED = frozenset({str, int, float, bool, type(None), bytes, datetime, Decimal, Decimal128, ObjectId})


def _copy_document(value, memo=None):
    """`copy.deepcopy` for documents: dicts and lists are copied, the values above shared,
    anything else deep-copied. Documents hold no cycles or shared parts, so deepcopy's memo
    and dispatch are cost only: 3.6× as long for a product with 50 holds and 40 outbox entries."""
    kind = type(value)
    if kind is dict:
        return {key: _copy_document(item) for key, item in value.items()}
    if kind is list:
        return [_copy_document(item) for item in value]
    return value if kind in _SHARED else copy.deepcopy(value, memo)


def _documents_copied_plainly() -> None:
    """mongomock deep-copies a document before every in-place update (to roll it back on a
    unique-key clash) and list values as they are set: 15 % of the hub's time on a hot
    product, whose holds and outbox entries are copied three times per order."""
    from mongomock import collection

    collection.copy = types.SimpleNamespace(copy=copy.copy, deepcopy=_copy_document)


def _index_id_lookups() -> None:
    """mongomock scans every document for every query, including `{"_id": x}` and the
    unique-index check on every insert and update: ~1 µs per stored document each time
    (10 ms at 10,000 orders). This answers id lookups from its id-keyed dict and checks
    unique indexes against a hash map, as MongoDB's indexes would; other filters still scan."""
    from bson import ObjectId
    from mongomock import DuplicateKeyError, helpers
    from mongomock.collection import Collection
    from mongomock.filtering import filter_applies
    from mongomock.store import CollectionStore

    scan = Collection._iter_documents
    if getattr(scan, "indexed_by_id", False):
        return
    ensure_uniques = Collection._ensure_uniques

    def iter_documents(self, filter):
        doc_id = filter.get("_id") if isinstance(filter, dict) else None
        if not isinstance(doc_id, (str, int, ObjectId)):
            return scan(self, filter)
        try:
            document = self._store[doc_id]
        except KeyError:
            return iter(())
        return iter([document] if filter_applies(filter, document) else [])

    def key_of(document, fields):
        values = []
        for field in fields:
            try:
                values.append(helpers.get_value_by_dot(document, field))
            except KeyError:
                values.append(None)
        return tuple(values)

    def check_uniques(self, new_data):
        """Each unique index maps key → the _id that last claimed it. An entry may be stale
        (that document changed or is gone), so a hit is confirmed against the document."""
        maps = self._store.__dict__.setdefault("unique_maps", {})
        for name, index in self._store.indexes.items():
            if not index.get("unique") or index.get("sparse") or index.get("partialFilterExpression"):
                continue
            fields = [field for field, _ in index["key"]]
            key = key_of(new_data, fields)
            try:
                hash(key)
            except TypeError:  # array or sub-document values: leave it to mongomock's scan
                return ensure_uniques(self, new_data)
            if name not in maps:  # first use: index what is already stored
                maps[name] = {key_of(doc, fields): doc["_id"] for doc in self._store.documents}
                maps[name][key] = new_data["_id"]
                ensure_uniques(self, new_data)
                continue
            owner = maps[name].get(key)
            if owner is not None and owner != new_data["_id"] and owner in self._store \
                    and key_of(self._store[owner], fields) == key:
                raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)
            maps[name][key] = new_data["_id"]

    iter_documents.indexed_by_id = True
    Collection._iter_documents = iter_documents
    Collection._ensure_uniques = check_uniques

    # mongomock also scans a collection with a TTL index for expired documents on every
    # access; MongoDB does it about once a minute. Once a second is plenty.
    expire = CollectionStore._remove_expired_documents

    def remove_expired_documents(self):
        now = time.monotonic()
        if now - self.__dict__.get("expired_at", 0.0) >= 1.0:
            self.__dict__["expired_at"] = now
            expire(self)

    CollectionStore._remove_expired_documents = remove_expired_documents
