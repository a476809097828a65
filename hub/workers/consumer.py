"""A Kafka consumer group that hands each CloudEvent to a handler.

- Offsets are committed manually, per partition, only after every event before them was
  handled (or dead-lettered): a crash means redelivery, never a skipped event. With a batch
  `flush`, the next fetch is handled while the previous one's flush is in flight (the wait
  for the round trip held up the events behind it); flushes run one at a time, in order. Commits go
  out at most every COMMIT_INTERVAL_S (and at stop), in the background: a commit per fetched
  batch cost more than the events under load, and what a crash leaves uncommitted is
  redelivered and deduplicated like any redelivery.
- A message that is not a valid CloudEvent, that the handler rejects, or whose data makes
  the handler fail in any other way, goes to the `dlq` topic with the reason, and the
  consumer goes on: data never stalls a partition.
- A failure of our own dependencies (store, Redis, broker: hub/adapters/dependency_errors.py) is
  retried with backoff, without committing.
- An event claiming the hub's own `source` without the hub's signature is dead-lettered
  (hub/adapters/event_signing.py). The hub's own events are skipped where they describe changes
  already made (`skip_own`); the notification engine reads them all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer

from domain.events import Rejected, check_cloud_event
from hub.adapters.dependency_errors import dependency_failure
from hub.wiring.metrics import CONSUMER_LAG, EVENTS_CONSUMED, EVENTS_DEAD_LETTERED

log = logging.getLogger(__name__)

Handler = Callable[[dict], Awaitable[None]]
Write = Callable[[], Awaitable[None]]
COMMIT_INTERVAL_S = 0.5
IDLE_AFTER_S = 2.0  # then fetch with the longer idle wait (hub/adapters/kafka.py), until a message comes


class EventConsumer:
    def __init__(self, kafka, *, group: str, topics: list[str], handler: Handler, source: str,
                 skip_own: bool = True, flush: Callable[[], Write] | None = None,
                 max_poll_records: int = 200) -> None:
        """`flush`, if given, is called once a fetch's messages are handled: it takes what the
        handler collected for them and returns the write that completes them (e.g. in one round
        trip; retried on failures of our own); offsets are committed only after it succeeds.
        `max_poll_records` bounds a fetch: what one fetch brings must be handled well within
        Kafka's max.poll.interval (300 s), or the group takes the partitions away."""
        self.kafka = kafka
        self.group = group
        self.topics = [kafka.topic(t) for t in topics]
        self.handler = handler
        self.source = source
        self.skip_own = skip_own
        self.flush = flush
        self.max_poll_records = max_poll_records
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._handled: dict = {}  # partition → the offset to commit next
        self._position: dict = {}  # partition → the offset after the last one handled here
        self._round = asyncio.Event()  # set, and replaced, after each fetch is handled
        self._committed_at = 0.0
        self._last_message_at = 0.0
        self._committing: asyncio.Task | None = None
        self._flushing: asyncio.Task | None = None  # the previous fetch's flush

    async def start(self) -> None:
        """Joins the group in the background: the hub serves requests meanwhile, and events
        published before the group is in place are read from the committed offsets."""
        self.consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.kafka.bootstrap_servers,
            group_id=self.kafka.topic(self.group),
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # events published before the group first joined count too
            max_poll_records=self.max_poll_records,
            **self.kafka.consumer_options,
        )
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.group}")

    async def stop(self) -> None:
        """Finish the event in hand, commit what was handled, leave the group."""
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=3)
            except asyncio.TimeoutError:
                pass  # wait_for cancelled it; the uncommitted rest is redelivered
            except Exception:
                log.exception("consumer ended with an error", extra={"group": self.group})
        await self.consumer.stop()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.consumer.start()
                break
            except Exception:
                log.exception("consumer could not join its group; retrying", extra={"group": self.group})
                await asyncio.sleep(1)
        try:
            while not self._stopping:
                try:
                    batches = await self.consumer.getmany(timeout_ms=200)
                except Exception:
                    log.exception("consumer fetch failed; retrying", extra={"group": self.group})
                    await asyncio.sleep(1)
                    continue
                self._pace(bool(batches))
                if batches:
                    try:
                        await self._handle_batches(batches)
                    except Exception:  # e.g. the dead-letter topic unreachable: the rest is fetched again
                        log.exception("consumer batch failed; resuming", extra={"group": self.group})
                        await asyncio.sleep(1)
                self._commit_in_background()
                done, self._round = self._round, asyncio.Event()
                done.set()
            try:
                await self._flushed()
            except Exception:  # stopping with a dependency away: that fetch is read again
                log.warning("last batch flush failed; its events will be read again", exc_info=True,
                            extra={"group": self.group})
        finally:
            if self._flushing is not None:  # cancelled at stop: what it flushed is redelivered
                self._flushing.cancel()
        await self._commit_now()

    async def caught_up(self) -> dict:
        """Returns once every event that was on this consumer's partitions when called has been
        handled here (or dead-lettered): what those events did is done. Returns the end offsets
        it waited for (tests wait on it instead of sleeping before "nothing else happened")."""
        while not (assigned := self.consumer.assignment()):  # still joining the group
            await self._round.wait()
        ends = await self.consumer.end_offsets(list(assigned))
        # A partition nothing was handled on since the start is at its committed offset.
        start = {tp: await self.consumer.committed(tp) or 0 for tp in ends if tp not in self._position}
        while not all(self._position.get(tp, start.get(tp, 0)) >= end for tp, end in ends.items()):
            await self._round.wait()
        return ends

    def _pace(self, got: bool) -> None:
        """The broker's wait for the next fetch: short while messages come, long once idle.
        aiokafka reads it from its fetcher for every request and has no public setter."""
        now = asyncio.get_running_loop().time()
        if got:
            self._last_message_at = now
        idle = now - self._last_message_at >= IDLE_AFTER_S
        self.consumer._fetcher._fetch_max_wait_ms = (self.kafka.idle_fetch_max_wait_ms if idle
                                                     else self.kafka.consumer_options["fetch_max_wait_ms"])

    def _commit_in_background(self) -> None:
        """Commits what was handled, at most every COMMIT_INTERVAL_S, without waiting: the round
        trip would hold up the events behind it. One commit is in flight at a time."""
        now = asyncio.get_running_loop().time()
        if not self._handled or now - self._committed_at < COMMIT_INTERVAL_S or \
                (self._committing is not None and not self._committing.done()):
            return
        self._committed_at = now
        offsets, self._handled = self._handled, {}
        self._committing = asyncio.create_task(self._send_commit(offsets))

    async def _commit_now(self) -> None:
        """At stop: after the commit in flight, whatever was handled since."""
        if self._committing is not None:
            await asyncio.gather(self._committing, return_exceptions=True)
        if self._handled:
            offsets, self._handled = self._handled, {}
            await self._send_commit(offsets)

    async def _send_commit(self, offsets: dict) -> None:
        try:
            await self.consumer.commit(offsets)
        except Exception:  # e.g. a rebalance took the partitions: their new owner reads them again
            log.warning("offset commit failed; those events will be read again", exc_info=True,
                        extra={"group": self.group})

    async def _handle_batches(self, batches: dict) -> None:
        """Handles a fetch's messages, partition by partition. Without `flush`, each
        partition's offset is recorded for the commit at once; with it, the fetch's write starts
        once the previous one is done, and the offsets are recorded when it is."""
        handled: dict = {}  # partition → offset of the last message handled
        try:
            for tp, messages in batches.items():
                for message in messages:
                    if self._stopping:
                        break
                    await self._handle(message)
                    handled[tp] = message.offset
            if self.flush is not None:
                await self._flushed()
        except BaseException:
            if self.flush is not None:
                handled = {}  # nothing of this fetch surely took effect: all of it again
            raise
        finally:
            for tp, messages in batches.items():
                last = handled.get(tp)
                if last != messages[-1].offset:
                    # Stopped or failed part-way: fetch the rest again rather than skip it.
                    self.consumer.seek(tp, messages[0].offset if last is None else last + 1)
        if self.flush is None:
            self._record(handled)
        elif handled:
            self._flushing = asyncio.create_task(self._flush_batch(self.flush(), handled),
                                                 name=f"flush-{self.group}")

    async def _flushed(self) -> None:
        """Waits for the previous fetch's flush; raises if it failed (only when stopping)."""
        flushing, self._flushing = self._flushing, None
        if flushing is not None:
            await flushing

    async def _flush_batch(self, write: Write, handled: dict) -> None:
        """Runs a fetch's write, then records its offsets for the commit."""
        try:
            await self._retrying(write, "batch")
        except Exception as exc:
            if dependency_failure(exc):  # stopping: all of this fetch again next time
                raise
            # The batch's data cannot be completed; retrying would stall the partitions.
            log.exception("batch flush failed on its data; going on", extra={"group": self.group})
            EVENTS_DEAD_LETTERED.labels(self.group, "batch_unprocessable").inc()
        self._record(handled)

    def _record(self, handled: dict) -> None:
        """The offsets after the last messages handled, for the next commit."""
        for tp, last in handled.items():
            self._handled[tp] = self._position[tp] = last + 1
            CONSUMER_LAG.labels(self.group, tp.topic).set(max(0, (self.consumer.highwater(tp) or 0) - last - 1))

    async def _handle(self, message) -> None:
        """Handles one message or dead-letters it; retries failures of our own until they pass."""
        try:
            event = check_cloud_event(json.loads(message.value or b""))
        except (ValueError, RecursionError) as exc:  # JSON, UTF-8, envelope and bounds errors are ValueErrors
            await self._dead_letter(message, "invalid_event", f"invalid CloudEvent: {exc}")
            return
        if event["source"] == self.source:
            if not self.kafka.signer.signed(message.headers, message.value):
                await self._dead_letter(message, "forged_source",
                                        f"claims the hub's own source {self.source!r} without the hub's signature")
                return
            if self.skip_own:
                EVENTS_CONSUMED.labels(self.group, "own").inc()
                return
        try:
            await self._retrying(lambda: self.handler(event), event["id"])
            EVENTS_CONSUMED.labels(self.group, "handled").inc()
        except Rejected as exc:
            await self._dead_letter(message, "rejected", str(exc))
        except Exception as exc:
            if dependency_failure(exc):  # only when stopping: the event is read again
                raise
            log.exception("event data made its handling fail", extra={"group": self.group, "work": event["id"]})
            await self._dead_letter(message, "unprocessable", f"{type(exc).__name__}: {exc}")

    async def _retrying(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        """Failures of our own, not the event's, are retried with backoff: never skipped."""
        delay = 0.1
        while True:
            try:
                return await work()
            except Exception as exc:
                if not dependency_failure(exc):
                    raise  # the data's fault: no retry can fix it
                # `what` is the event's id, or "batch" for the flush after a batch.
                log.exception("event handling failed; retrying", extra={"group": self.group, "work": what})
                if self._stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _dead_letter(self, message, code: str, reason: str) -> None:
        """`code` is one of a fixed set (a metric label), `reason` says what exactly."""
        reason = reason[:1000]
        EVENTS_CONSUMED.labels(self.group, "dead_lettered").inc()
        EVENTS_DEAD_LETTERED.labels(self.group, code).inc()
        log.warning("event dead-lettered",
                    extra={"group": self.group, "topic": message.topic, "code": code, "reason": reason})
        record = {
            "reason": reason,
            "code": code,
            "group": self.group,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "key": message.key.decode(errors="replace") if message.key else None,
            "value": message.value.decode(errors="replace") if message.value else None,
        }
        await self.kafka.producer.send_and_wait(self.kafka.topic("dlq"), json.dumps(record).encode(), key=message.key)
