"""Indexes for the embedded document store (mongomock), which otherwise scans every document
for every query (~10 ms per find or count at a few thousand documents), checks each with a
generic filter interpreter, sorts through BSON-comparison wrappers and copies every match
before applying the limit.

For each field named in a collection's declared indexes (`create_index`), the store keeps a
hash map value → ids once a query first filters on that field, and updates it on every
insert, update and delete. A query with an equality (`x`, `{"$eq": x}`, `{"$in": [...]}`) on
such a field, or a literal substring `$regex` on one (a trigram map), then reads only the
candidates; every candidate is still checked against the whole filter, so an index can only
make a query cheaper, never change its answer. Other queries scan as before.

Keys are strings, numbers, booleans and ObjectIds (what the hub stores ids, slugs and
statuses as); values of other types are simply not indexed and their queries scan.

Besides: a filter made only of top-level equalities, `$in` lists, literal substrings and
numeric ranges is checked by a plain Python predicate (a document whose value has another type goes to
mongomock's own check); a sort on top-level fields whose values are all of one plain type
uses Python's sort; and a cursor with a limit copies only the documents it returns.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Mapping
from datetime import datetime

from bson import ObjectId

_KEYS = (str, int, float, bool, ObjectId)  # 1, 1.0 and True share a key: the filter tells them apart
_LITERAL = re.compile(r"(?:[^\\.^$*+?{}\[\]|()]|\\[^A-Za-z0-9])*")  # what re.escape produces


def _values(document: dict, path: str) -> set:
    """The indexable values at `path`, through arrays, as MongoDB's equality sees them."""
    current = [document]
    for part in path.split("."):
        found = []
        for item in current:
            if isinstance(item, dict):
                if part in item:
                    found.append(item[part])
            elif isinstance(item, list):
                found += [element[part] for element in item if isinstance(element, dict) and part in element]
                if part.isdigit() and int(part) < len(item):
                    found.append(item[int(part)])
        current = found
    values = set()
    for value in current:
        for element in (value if isinstance(value, list) else (value,)):
            if type(element) in _KEYS:
                values.add(element)
    return values


def _trigrams(text: str) -> set[str]:
    return {text[i:i + 3] for i in range(len(text) - 2)}


def _wanted(condition) -> tuple[str, list] | None:
    """("eq", values) or ("substring", [text]) when `condition` can use an index."""
    if type(condition) in _KEYS:
        return "eq", [condition]
    if not isinstance(condition, dict):
        return None
    if "$eq" in condition and type(condition["$eq"]) in _KEYS:
        return "eq", [condition["$eq"]]
    values = condition.get("$in")
    if isinstance(values, list) and all(type(v) in _KEYS for v in values):
        return "eq", values
    pattern = condition.get("$regex")
    if (isinstance(pattern, str) and not condition.get("$options") and set(condition) <= {"$regex", "$options"}
            and _LITERAL.fullmatch(pattern)):
        text = re.sub(r"\\(.)", r"\1", pattern)
        if len(text) >= 3:
            return "substring", [text]
    return None


_RANGES = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_MISSING = object()


def _predicate(query, filter_applies):
    """A quick check equivalent to mongomock's for simple filters; None for any other filter."""
    if not isinstance(query, dict) or not query:
        return None
    checks = []
    for field, condition in query.items():
        if field.startswith("$") or "." in field:
            return None
        if type(condition) in (str, int, bool):
            checks.append((field, "eq", condition))
            continue
        if not isinstance(condition, dict) or len(condition) != 1:
            return None
        (op, arg), = condition.items()
        wanted = _wanted(condition)
        if wanted is not None and wanted[0] == "substring":
            checks.append((field, "substring", wanted[1][0]))
        elif op == "$in" and isinstance(arg, list) and arg and len({type(v) for v in arg}) == 1 \
                and type(arg[0]) in (str, int):
            checks.append((field, "in", (type(arg[0]), frozenset(arg))))
        elif op in _RANGES and type(arg) in (int, float):
            checks.append((field, op, arg))
        else:
            return None

    def applies(document: dict) -> bool:
        for field, op, arg in checks:
            value = document.get(field, _MISSING)
            if op == "eq":
                if type(value) is not type(arg):
                    return filter_applies(query, document)  # types MongoDB may compare its own way
                if value != arg:
                    return False
            elif op == "substring":
                if type(value) is not str:
                    return filter_applies(query, document)
                if arg not in value:
                    return False
            elif op == "in":
                kind, values = arg
                if type(value) is not kind:
                    return filter_applies(query, document)
                if value not in values:
                    return False
            else:
                if type(value) not in (int, float) or value != value:
                    return filter_applies(query, document)
                if not _RANGES[op](value, arg):
                    return False
        return True
    return applies


def _plain_sort(documents: list, sort) -> list | None:
    """`documents` sorted as mongomock would, when every sort value is of one plain type."""
    sort = list(sort.items() if isinstance(sort, dict) else sort)
    for field, _direction in sort:
        if field.startswith("$") or "." in field:
            return None
        kinds = {_kind(document.get(field, _MISSING)) for document in documents}
        if len(kinds) > 1 or None in kinds:
            return None
    for field, direction in reversed(sort):  # stable, key by key, like mongomock
        documents = sorted(documents, key=operator.itemgetter(field), reverse=direction < 0)
    return documents


def _kind(value):
    if type(value) in (int, float):
        return "number" if value == value else None
    if type(value) is str:
        return "str"
    if type(value) is datetime:
        return "aware" if value.tzinfo is not None else "naive"
    return None


class StoreIndexes:
    """One collection's maps, kept beside mongomock's CollectionStore."""

    def __init__(self, store) -> None:
        self.store = store
        self.counter = itertools.count()
        self.order = {doc_id: next(self.counter) for doc_id in store._documents}  # natural (insertion) order
        self.maps: dict[str, dict] = {}  # field (or "~field" for trigrams) → key → set of ids
        self.keys: dict[str, dict] = {}  # the same → id → the keys it is filed under
        self.updating: list | None = None  # documents an update in progress may change in place

    def declared(self) -> set[str]:
        return {field for index in self.store.indexes.values() for field, _ in index["key"]} - {"_id"}

    def _keys_of(self, name: str, document: dict) -> set:
        if name.startswith("~"):
            return set().union(*(_trigrams(v) for v in _values(document, name[1:]) if isinstance(v, str)))
        return _values(document, name)

    def _build(self, name: str) -> dict:
        self.maps[name], self.keys[name] = {}, {}
        for doc_id, document in self.store._documents.items():
            self._file(name, doc_id, document)
        return self.maps[name]

    def _file(self, name: str, doc_id, document: dict) -> None:
        keys = self.keys[name][doc_id] = self._keys_of(name, document)
        bucket_map = self.maps[name]
        for key in keys:
            bucket_map.setdefault(key, set()).add(doc_id)

    def _unfile(self, name: str, doc_id) -> None:
        bucket_map = self.maps[name]
        for key in self.keys[name].pop(doc_id, ()):
            bucket = bucket_map.get(key)
            if bucket is not None:
                bucket.discard(doc_id)
                if not bucket:
                    del bucket_map[key]

    def stored(self, doc_id, document: dict, new: bool) -> None:
        if new:
            self.order[doc_id] = next(self.counter)
        for name in self.maps:
            self._unfile(name, doc_id)
            self._file(name, doc_id, document)

    def removed(self, doc_id) -> None:
        self.order.pop(doc_id, None)
        for name in self.maps:
            self._unfile(name, doc_id)

    def candidates(self, query) -> list | None:
        """The documents that may match `query`, in natural order; None when no index helps."""
        if not isinstance(query, dict):
            return None
        declared = self.declared()
        best = None
        for field, condition in query.items():
            if field not in declared and field != "_id":
                continue
            wanted = _wanted(condition)
            if wanted is None:
                continue
            kind, values = wanted
            if field == "_id":  # the store's own dict is the _id index (e.g. `{"_id": {"$in": ids}}`)
                if kind != "eq":
                    continue
                ids = set(values)
            elif kind == "eq":
                bucket_map = self.maps.get(field) or self._build(field)
                ids = set().union(*(bucket_map.get(v, ()) for v in values))
            else:
                bucket_map = self.maps.get("~" + field) or self._build("~" + field)
                grams = sorted((bucket_map.get(g, set()) for g in _trigrams(values[0])), key=len)
                ids = set(grams[0]).intersection(*grams[1:])
            if best is None or len(ids) < len(best):
                best = ids
        if best is None:
            return None
        documents = self.store._documents
        return [documents[i] for i in sorted((i for i in best if i in documents), key=self.order.__getitem__)]


def _indexes(store) -> StoreIndexes:
    indexes = store.__dict__.get("hub_indexes")
    if indexes is None:
        indexes = store.__dict__["hub_indexes"] = StoreIndexes(store)
    return indexes


def install() -> None:
    """Patches mongomock (once per process) to keep and use the maps."""
    from mongomock import helpers
    from mongomock.collection import Collection, Cursor
    from mongomock.filtering import filter_applies, resolve_sort_key
    from mongomock.store import CollectionStore

    if getattr(Collection._iter_documents, "hub_indexes", False):
        return
    scan = Collection._iter_documents
    get_dataset, compute_results = Collection._get_dataset, Cursor._compute_results
    set_item, del_item, drop = CollectionStore.__setitem__, CollectionStore.__delitem__, CollectionStore.drop
    update = Collection._update

    def setitem(self, key, value):
        new = key not in self._documents
        set_item(self, key, value)
        indexes = self.__dict__.get("hub_indexes")
        if indexes is not None:
            indexes.stored(key, value, new)

    def delitem(self, key):
        del_item(self, key)
        indexes = self.__dict__.get("hub_indexes")
        if indexes is not None:
            indexes.removed(key)

    def drop_all(self):
        drop(self)
        self.__dict__.pop("hub_indexes", None)

    def iter_documents(self, filter):
        store = self._store
        indexes = _indexes(store)
        if isinstance(filter, dict) and type(filter.get("_id")) in _KEYS:  # by _id: the id map is quicker
            documents = scan(self, filter)
        else:
            store._remove_expired_documents()
            found = indexes.candidates(filter)
            applies = _predicate(filter, filter_applies) or (lambda document: filter_applies(filter, document))
            documents = (d for d in (list(store._documents.values()) if found is None else found) if applies(d))
        if indexes.updating is not None:  # the update changes these in place: refile them after
            documents = _recording(documents, indexes.updating)
        return documents

    def update_refiling(self, *args, **kwargs):
        """mongomock updates the stored document in place, past __setitem__: refile what it touched."""
        indexes = _indexes(self._store)
        outer, indexes.updating = indexes.updating, []
        try:
            return update(self, *args, **kwargs)
        finally:
            touched, indexes.updating = indexes.updating, outer
            stored = self._store._documents
            for document in touched:
                doc_id = document.get("_id")
                if isinstance(doc_id, dict):
                    doc_id = helpers.hashdict(doc_id)
                if stored.get(doc_id) is document:  # not replaced by a rollback (already refiled then)
                    indexes.stored(doc_id, document, new=False)

    def dataset(self, spec, sort, fields, as_class):
        if sort:
            documents = list(self._iter_documents(spec))
            ordered = _plain_sort(documents, sort)
            if ordered is None:  # mongomock's own sort, on the documents already found
                for key, direction in reversed(list(sort.items() if isinstance(sort, dict) else sort)):
                    if key == "$natural":
                        documents = documents[::-1] if direction < 0 else documents
                        continue
                    if key.startswith("$"):
                        raise NotImplementedError(f"Sorting by {key} is not implemented in mongomock yet")
                    documents = sorted(documents, key=lambda x, k=key: resolve_sort_key(k, x), reverse=direction < 0)
                ordered = documents
            return (self._copy_only_fields(document, fields, as_class) for document in ordered)
        return get_dataset(self, spec, sort, fields, as_class)

    def first(self, filter=None, *args, **kwargs):
        """pymongo's find_one limits its cursor to one document; mongomock's copied them all."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        cursor = self.find(filter, *args, **kwargs).limit(1)
        return next(cursor, None)

    def page(self, with_limit_and_skip=False):
        """A cursor with a positive limit copies only the documents it returns."""
        if not with_limit_and_skip or not self._limit or self._limit < 0 or self._results:
            return compute_results(self, with_limit_and_skip)
        key = (self._factory, self._skip, self._limit)
        cached = self.__dict__.get("hub_page")
        if cached is None or cached[0] != key:
            documents = list(itertools.islice(self._factory(), self._skip, self._skip + self._limit))
            if self.collection.codec_options.tz_aware:
                documents = [helpers.make_datetime_timezone_aware_in_document(d) for d in documents]
            cached = self.__dict__["hub_page"] = (key, documents)
        return cached[1]

    iter_documents.hub_indexes = True
    iter_documents.indexed_by_id = getattr(scan, "indexed_by_id", False)  # hub/adapters/embedded_mongo.py's id lookups, kept
    Collection._iter_documents = iter_documents
    Collection._update = update_refiling
    Collection._get_dataset = dataset
    Collection.find_one = first
    Cursor._compute_results = page
    CollectionStore.__setitem__ = setitem
    CollectionStore.__delitem__ = delitem
    CollectionStore.drop = drop_all


def _recording(documents, into: list):
    for document in documents:
        into.append(document)
        yield document
