"""The MongoDB connection: PyMongo's async client to a real server when MONGODB_URI is
set, else an in-memory mongomock store behind the same API."""

from __future__ import annotations

import asyncio
import logging
import time

from mongomock_motor import AsyncCommandCursor, AsyncLatentCommandCursor, AsyncMongoMockClient
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from config.settings import Settings
from hub.adapters import embedded_indexes

log = logging.getLogger(__name__)


def connect_mongo(settings: Settings):
    if settings.mongodb_uri:
        return AsyncMongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    log.warning("MONGODB_URI is unset: using the embedded in-memory document store; data is lost on exit")
    return embedded_client()


def embedded_client() -> "EmbeddedClient":
    _index_id_lookups()
    _bulk_updates_take_sort()
    embedded_indexes.install()
    return EmbeddedClient(tz_aware=True)


class EmbeddedClient(AsyncMongoMockClient):
    """mongomock behind mongomock-motor, which has Motor's shapes. Where PyMongo's async API
    differs, this matches it (close() here; the awaited command cursors below), so the code
    above sees one API."""

    async def close(self) -> None:
        """Nothing to release: the data lives in this process, for as long as it runs."""


def _await_cursor(cursor):
    """PyMongo awaits aggregate() and list_indexes() for their cursor."""
    async def itself():
        return cursor
    return itself().__await__()


AsyncCommandCursor.__await__ = _await_cursor
AsyncLatentCommandCursor.__await__ = _await_cursor


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
        if isinstance(doc_id, dict) and list(doc_id) == ["$in"] and isinstance(doc_id["$in"], list) \
                and all(isinstance(i, (str, int, ObjectId)) for i in doc_id["$in"]):
            # `{"_id": {"$in": ids}}` (a broadcast's batch of users): each from the id map.
            found = (self._store[i] for i in dict.fromkeys(doc_id["$in"]) if i in self._store)
            return iter([document for document in found if filter_applies(filter, document)])
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


async def mongo_healthy(db: AsyncDatabase) -> bool:
    try:
        await asyncio.wait_for(db.command("ping"), timeout=2)
        return True
    except (PyMongoError, asyncio.TimeoutError, OSError):
        return False
