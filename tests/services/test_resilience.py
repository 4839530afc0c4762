"""Backoff, circuit breaker and answer cache (services/resilience.py), on a fake clock."""
from __future__ import annotations

import pytest

from services.resilience import CLOSED, HALF_OPEN, OPEN, Backoff, CircuitBreaker, TtlCache
from tests.fakes.clock import Clock


def test_backoff_doubles_up_to_its_cap_with_half_of_each_step_jittered() -> None:
    b = Backoff(base_s=0.2, cap_s=1.0)
    assert [b.delay(n, lambda: 0.0) for n in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert [b.delay(n, lambda: 0.999999) for n in range(5)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0], abs=1e-5)


def test_breaker_opens_after_n_failures_in_a_row_and_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 30.0, clock)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # not in a row
    breaker.failed()
    breaker.failed()
    assert breaker.allow() == CLOSED
    breaker.failed()
    assert breaker.state == OPEN and breaker.allow() is None


def test_breaker_half_opens_after_the_cooldown_for_one_trial_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 30.0, clock)
    breaker.failed()
    clock.now += 29.9
    assert breaker.allow() is None
    clock.now += 0.1
    assert breaker.state == HALF_OPEN
    assert breaker.allow() == HALF_OPEN
    assert breaker.allow() is None  # a second caller during the trial is refused
    breaker.succeeded()
    assert breaker.state == CLOSED and breaker.allow() == CLOSED


def test_a_failed_trial_opens_the_breaker_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(5, 30.0, clock)
    for _ in range(5):
        breaker.failed()
    clock.now += 30
    assert breaker.allow() == HALF_OPEN
    breaker.failed()  # one failure is enough while half-open
    assert breaker.allow() is None
    clock.now += 30
    assert breaker.allow() == HALF_OPEN


def test_cache_keeps_answers_for_their_ttl_including_none() -> None:
    clock = Clock()
    cache: TtlCache[str | None] = TtlCache(60.0, clock)
    assert cache.get("a") == (False, None)
    cache.put("a", "answer")
    cache.put("b", None)  # "not found" is an answer too
    clock.now += 59.9
    assert cache.get("a") == (True, "answer") and cache.get("b") == (True, None)
    clock.now += 0.1
    assert cache.get("a") == (False, None)


def test_cache_drops_its_oldest_entry_when_full_and_can_be_off() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(60.0, clock, size=2)
    for i, key in enumerate("abc"):
        cache.put(key, i)
    assert cache.get("a") == (False, None) and cache.get("c") == (True, 2)
    off: TtlCache[int] = TtlCache(0.0, clock)
    off.put("a", 1)
    assert off.get("a") == (False, None)
