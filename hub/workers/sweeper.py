"""Runs the clean-ups every few seconds (orders: expired reservations, stalled placements,
unfinished restocks, refunds of cancelled paid orders not made yet, unpaid orders; points:
interrupted redemptions). Every step is a
compare-and-set, so all hub processes may run them at once; jitter keeps them from doing
so in lockstep."""

from __future__ import annotations

import asyncio
import logging
import random

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, sweeps, interval_s: float) -> None:
        self.sweeps = sweeps
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * random.uniform(0.8, 1.2))
            for sweep in self.sweeps:
                try:
                    await sweep()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sweep failed; will try again", extra={"sweep": sweep.__qualname__})
