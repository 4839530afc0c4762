"""Calling an upstream system that may be slow or down: backoff with jitter, a circuit breaker and
a short cache of answers. Clock, sleep and randomness are parameters, so tests run without waiting.

Thread-safe: the action server runs each action call in a worker thread (actions/server.py)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter" (AWS Architecture Blog, "Exponential Backoff And
    Jitter", 2015): the n-th retry waits between half and all of ``min(cap, base * 2**n)``, so
    clients that failed together do not retry together."""

    base_s: float = 0.2
    cap_s: float = 2.0

    def delay(self, retry: int, rand: Callable[[], float]) -> float:
        """The wait before retry number ``retry`` (0 for the first); ``rand()`` is in [0, 1)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** retry)
        return ceiling / 2 + rand() * ceiling / 2


class CircuitBreaker:
    """Opens after ``failures`` failed calls in a row; while open every call is refused at once.
    After ``cooldown_s`` one trial call is let through (half-open): its success closes the
    breaker, its failure opens it for another cool-down. Other calls are refused during the trial."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float]) -> None:
        if failures < 1:
            raise ValueError("a breaker opens after at least one failure")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failed = 0
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                return HALF_OPEN
            return self._state

    def allow(self) -> str | None:
        """The state a call may go ahead in (``closed``, or ``half_open`` for the one trial call),
        or None when it must not be made."""
        with self._lock:
            if self._state == CLOSED:
                return CLOSED
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                self._state = HALF_OPEN
            if self._state == HALF_OPEN and not self._trial:
                self._trial = True
                return HALF_OPEN
            return None

    def succeeded(self) -> None:
        with self._lock:
            self._state, self._failed, self._trial = CLOSED, 0, False

    def failed(self) -> None:
        with self._lock:
            self._failed += 1
            if self._state == HALF_OPEN or self._failed >= self.failures:
                self._state, self._opened_at, self._trial = OPEN, self._clock(), False


class TtlCache(Generic[V]):
    """Answers kept for ``ttl_s`` seconds, at most ``size`` of them (the oldest goes first).
    Only answers are put here: a failure is never cached, so the next call asks again."""

    def __init__(self, ttl_s: float, clock: Callable[[], float], size: int = 2048) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, V | None]:
        """``(True, value)`` for a fresh entry, else ``(False, None)`` (a cached value may be None)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            if self._clock() >= item[0]:
                del self._items[key]
                return False, None
            return True, item[1]

    def put(self, key: str, value: V) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (self._clock() + self.ttl_s, value)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
