"""A clock (seconds, as time.time) that a test moves instead of waiting for time to pass."""

from __future__ import annotations

import time


class Clock:
    """Both sides read it; the test moves it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds
