"""A WebSocket connection's outgoing frames: a bounded queue with a single writer.

A frame is written at once when the socket has taken everything written before (so a
client that keeps up never waits and is never conflated); otherwise it waits, and when the
socket has taken the previous write, everything waiting is written together. So a client that reads slowly holds at most its budget in this process: frames
waiting plus frames written but not yet flushed. Stock updates are states, so a product's
frame still waiting is replaced by its newer one (conflation); any other frame is kept, and a
client whose frames exceed the budget is closed (it resumes with `since`).

The writer runs on the flush callbacks rather than in a task per connection: a task wake-up
per frame and socket would cost more than the write itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from hub.wiring.metrics import WEBSOCKET_FRAMES

_SENT = WEBSOCKET_FRAMES.labels("sent")
_CONFLATED = WEBSOCKET_FRAMES.labels("conflated")


class SendQueue:
    def __init__(self, write: Callable[[bytes], asyncio.Future], on_overflow: Callable[[], None],
                 budget_bytes: int) -> None:
        """`write` puts one frame on the socket and returns None when the socket took it at
        once, else a future that completes when the socket has taken it (writes complete in
        order)."""
        self._write = write
        self._on_overflow = on_overflow
        self.budget_bytes = budget_bytes
        self.bytes = 0  # waiting + written but not yet flushed
        self._in_flight = 0  # bytes of the write not yet flushed; 0 when the socket is idle
        self._items: deque[list] = deque()  # [conflation key or None, frame]
        self._latest: dict[str, list] = {}  # conflation key → its waiting item
        self.closed = False

    def put(self, frame: bytes, conflate: str | None = None) -> None:
        if self.closed:
            return
        if not self._in_flight:
            self._send([frame])
            return
        if conflate is not None and (waiting := self._latest.get(conflate)) is not None:
            self.bytes += len(frame) - len(waiting[1])
            waiting[1] = frame
            _CONFLATED.inc()
            return
        item = [conflate, frame]
        self._items.append(item)
        if conflate is not None:
            self._latest[conflate] = item
        self.bytes += len(frame)
        if self.bytes > self.budget_bytes:
            self.close()
            self._on_overflow()

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._latest.clear()

    def _send(self, frames: list[bytes]) -> None:
        size = sum(len(frame) for frame in frames)
        try:
            for frame in frames:
                flushed = self._write(frame)
        except Exception:  # the socket closed under us; the handler cleans up
            self.close()
            return
        _SENT.inc(len(frames))
        if flushed is None:  # the socket took it all at once: the usual case, nothing waits
            return
        if flushed.done():
            if flushed.exception() is not None:
                self.close()
            return
        self._in_flight = size
        self.bytes += size
        flushed.add_done_callback(self._flushed)

    def _flushed(self, flushed: asyncio.Future) -> None:
        self.bytes -= self._in_flight
        self._in_flight = 0
        if flushed.cancelled() or flushed.exception() is not None:
            self.close()
        elif self._items and not self.closed:
            frames = [frame for _key, frame in self._items]
            self._items.clear()
            self._latest.clear()
            self.bytes -= sum(len(frame) for frame in frames)
            self._send(frames)
