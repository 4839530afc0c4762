"""How soon a new WeChat turn would be answered, judged from the turns already under way.

WeChat drops a passive reply that comes later than 5 s. Under a burst (150 messages at once) a
turn that starts behind a hundred others cannot make it however it is timed, and waiting the whole
deadline for it only delays the customer-service message that will carry its answer. So before
waiting, the channel asks ``expected_wait()``: the turns in flight share the Rasa process, and
they finish at the rate Rasa finishes turns when it is busy, so a new one is done after about
``(in_flight + 1) / rate`` seconds. When that, added to the time already spent on the request,
passes the deadline, the channel answers ``success`` at once and sends the reply later.

The rate counts only turns that finished while a queue stood (``MIN_IN_FLIGHT`` or more in flight)
over the last ``window_s`` seconds, and speaks only once ``MIN_FINISHES`` of them did: at light load
turns finish as fast as they arrive, which says nothing of what Rasa can do, and no turn is judged.

Runs inside the Rasa process (Python 3.10); the clock is a parameter (tests drive it by hand).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Deque, Optional

# Below this many turns in flight a turn is never judged late: the measure needs a queue to speak of.
MIN_IN_FLIGHT = 4
# The rate speaks once this many turns finished under a queue within the window.
MIN_FINISHES = 10


class TurnPace:
    """Turns in flight and the recent rate at which turns finish."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = 5.0) -> None:
        self.clock = clock
        self.window_s = window_s
        self.in_flight = 0
        self._busy_finishes: Deque[float] = deque()

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        if self.in_flight >= MIN_IN_FLIGHT:
            self._busy_finishes.append(self.clock())
        self.in_flight = max(0, self.in_flight - 1)

    def rate(self) -> float:
        """Turns per second Rasa finished while busy, over the last ``window_s``; 0.0 without a measure."""
        now = self.clock()
        while self._busy_finishes and self._busy_finishes[0] < now - self.window_s:
            self._busy_finishes.popleft()
        span = now - self._busy_finishes[0] if self._busy_finishes else 0.0
        return len(self._busy_finishes) / span if len(self._busy_finishes) >= MIN_FINISHES and span > 0 else 0.0

    def expected_wait(self) -> float:
        """Seconds until a turn started now would be answered; 0.0 without a queue or a measure."""
        if self.in_flight < MIN_IN_FLIGHT:
            return 0.0
        rate = self.rate()
        return (self.in_flight + 1) / rate if rate > 0 else 0.0


class LoopLag:
    """How late this event loop runs what is ready: the time a request waited before its handler.

    Under load Rasa's turns keep the loop busy (parsing and predicting run on it), and a request that
    arrived waits for the loop before the channel's handler starts, where the channel's clock begins.
    A probe sleeps ``interval_s`` over and over and records how much later than asked it woke: about
    the wait a request arriving now meets. ``recent()`` is the largest of the last ``keep_s`` seconds,
    so a deadline counted from ``now - recent()`` is counted, roughly, from the request's arrival."""

    def __init__(self, interval_s: float = 0.05, keep_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.keep_s = keep_s
        self.clock = clock
        self._samples: Deque[tuple[float, float]] = deque()  # (when, lag)
        self._task: Optional["asyncio.Task[None]"] = None
        self.worst = 0.0  # the largest lag since the probe started

    def record(self, lag: float) -> None:
        now = self.clock()
        self.worst = max(self.worst, lag)
        self._samples.append((now, max(0.0, lag)))
        while self._samples and self._samples[0][0] < now - self.keep_s:
            self._samples.popleft()

    def recent(self) -> float:
        now = self.clock()
        return max((lag for when, lag in self._samples if when >= now - self.keep_s), default=0.0)

    def start(self) -> None:
        """Start probing on the running loop (once; the channel calls it on its first request)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._probe())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _probe(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval_s)
            self.record(time.monotonic() - asked - self.interval_s)
