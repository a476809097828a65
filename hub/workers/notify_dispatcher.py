"""Runs the notification engine's deliveries in the background of each hub process.

- `submit(id)` dispatches a notification just recorded (its job is already leased to
  this process, so no other process takes it meanwhile). What is submitted in one turn of
  the event loop (a fetch of events, a poll's claims) is dispatched as one batch
  (`Notifier.process_many`: one read, one caps round trip, bulk writes).
- A poll loop claims due jobs (retries, held messages whose time has come, and work a
  dead process left behind once its lease ran out) with a compare-and-set, so several
  processes share them and each job runs once at a time.
- Concurrency is bounded; `room()` lets the consumer wait while this process has
  plenty in hand, so a burst of events backs up in Kafka, not in memory (and no job
  waits here long enough for its lease to run out).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from domain.notifications import LEASE
from hub.wiring.metrics import NOTIFICATIONS_HELD, NOTIFY_IN_FLIGHT

log = logging.getLogger(__name__)

POLL_S = 1.0
BATCH = 200
HELD_GAUGE_EVERY_S = 15.0


class Dispatcher:
    def __init__(self, notifier, store, *, concurrency: int, clock: Callable) -> None:
        self.notifier = notifier
        self.store = store
        self.clock = clock
        self.limit = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[str] = set()
        self._submitted: list[str] = []  # this turn's, not in a batch yet
        self._tasks: set[asyncio.Task] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._loop_task: asyncio.Task | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._poll(), name="notify-dispatcher")

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Stops claiming; lets what is in hand finish briefly. Unfinished jobs keep their
        lease and are taken up again (by any process) when it runs out."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        self._submitted.clear()  # not started: their leases run out, and a process takes them up
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, notification_id: str) -> None:
        if notification_id in self._in_flight:
            return
        self._in_flight.add(notification_id)
        if not self._submitted:
            asyncio.get_running_loop().call_soon(self._start_batches)
        self._submitted.append(notification_id)
        self._update_room()

    def _start_batches(self) -> None:
        submitted, self._submitted = self._submitted, []
        for start in range(0, len(submitted), BATCH):
            task = asyncio.create_task(self._run(submitted[start:start + BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def room(self) -> None:
        """Returns once this process has fewer than twice its concurrency in hand."""
        await self._room.wait()

    def _update_room(self) -> None:
        NOTIFY_IN_FLIGHT.set(len(self._in_flight))
        if len(self._in_flight) >= 2 * self.limit:
            self._room.clear()
        else:
            self._room.set()

    async def _run(self, batch: list[str]) -> None:
        try:
            await self.notifier.process_many(batch, self._slots)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Ours (the store unreachable): the jobs keep their lease and run again after it.
            log.exception("notification dispatch failed; will retry", extra={"notifications": len(batch)})
        finally:
            self._in_flight.difference_update(batch)
            self._update_room()

    async def _poll(self) -> None:
        last_gauge = None
        while True:
            try:
                now = self.clock()
                if last_gauge is None or (now - last_gauge).total_seconds() >= HELD_GAUGE_EVERY_S:
                    NOTIFICATIONS_HELD.set(await self.store.held_count())
                    last_gauge = now
                claimed = 0
                if len(self._in_flight) < self.limit:
                    for notification_id in await self.store.due_jobs(now, BATCH):
                        if notification_id not in self._in_flight and await self.store.claim(
                                notification_id, now, now + LEASE):
                            self.submit(notification_id)
                            claimed += 1
                if claimed == BATCH:
                    continue  # more may be due: no pause
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification poll failed; will try again")
            await asyncio.sleep(POLL_S)
