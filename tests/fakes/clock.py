"""A monotonic clock for tests that moves only when told to, or when something sleeps on it."""
from __future__ import annotations

import datetime as dt


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class WallClock:
    """A date and time (UTC) for tests, moved only by the test: ``now=WallClock(t0)`` where a service
    takes a ``now`` callable."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)
