"""How soon a new WeChat turn would be answered, judged from the turns already under way.

WeChat drops a passive reply that comes later than 5 s. Under a burst (150 messages at once) a
turn that starts behind a hundred others cannot make it however it is timed, and waiting the whole
deadline for it only delays the customer-service message that will carry its answer. So before
waiting, the channel asks ``expected_wait()``: the turns in flight share the Rasa process, and
they finish at the rate turns finished over the last ``window_s`` seconds, so a new one is done
after about ``(in_flight + 1) / rate`` seconds. When that, added to the time already spent on the
request, passes the deadline, the channel answers ``success`` at once and sends the reply later.

Runs inside the Rasa process (Python 3.10); the clock is a parameter (tests drive it by hand).
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Deque

# Below this many turns in flight a turn is never judged late: the measure needs a queue to speak of.
MIN_IN_FLIGHT = 4


class TurnPace:
    """Turns in flight and the recent rate at which turns finish."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = 5.0) -> None:
        self.clock = clock
        self.window_s = window_s
        self.in_flight = 0
        self._finished: Deque[float] = deque()
        self._last_rate = 0.0

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._finished.append(self.clock())
        self.rate()  # keeps the last rate for a burst after a quiet spell

    def rate(self) -> float:
        """Turns finished per second over the last ``window_s``; when none finished there (a burst
        has just begun), the last rate measured; 0.0 before any."""
        now = self.clock()
        while self._finished and self._finished[0] < now - self.window_s:
            self._finished.popleft()
        if self._finished:
            span = max(now - self._finished[0], 1.0)  # at least a second: one quick burst is not a rate
            self._last_rate = len(self._finished) / span
        return self._last_rate

    def expected_wait(self) -> float:
        """Seconds until a turn started now would be answered; 0.0 without a queue or a measure."""
        if self.in_flight < MIN_IN_FLIGHT:
            return 0.0
        rate = self.rate()
        return (self.in_flight + 1) / rate if rate > 0 else 0.0
