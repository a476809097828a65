"""Which failures are of the hub's own dependencies (the store, Redis, the broker) and
worth retrying, as opposed to failures caused by the data being handled, which no retry
can fix (an event is dead-lettered; it must never stall the events behind it)."""

from __future__ import annotations

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, WriteError
from redis.exceptions import DataError, RedisClusterException, RedisError


def dependency_failure(exc: BaseException) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True  # a concurrent writer got there first: the retry sees its result
    if isinstance(exc, (WriteError, BulkWriteError, InvalidDocument, DataError, MessageSizeTooLargeError)):
        return False  # what we built from the data is refused as it is
    # RedisClusterException is not a RedisError: a Redis Cluster with no reachable node for a
    # slot (REDIS_CLUSTER=1) is Redis being down all the same.
    return isinstance(exc, (PyMongoError, RedisError, RedisClusterException, KafkaError, OSError, TimeoutError))
