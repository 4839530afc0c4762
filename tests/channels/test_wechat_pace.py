"""channels.wechat_pace: when a new turn would be answered, on a clock the test drives."""
from __future__ import annotations

from channels.wechat_pace import MIN_IN_FLIGHT, TurnPace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_queue_means_no_wait() -> None:
    clock = Clock()
    pace = TurnPace(clock)
    assert pace.expected_wait() == 0.0
    for _ in range(MIN_IN_FLIGHT - 1):
        pace.started()
    assert pace.expected_wait() == 0.0  # a few turns in flight are not a queue


def test_a_queue_waits_as_long_as_the_recent_rate_says() -> None:
    clock = Clock()
    pace = TurnPace(clock, window_s=5.0)
    for _ in range(40):  # 40 turns finished over 2 s: 20 per second
        pace.started()
        clock.now += 0.05
        pace.finished()
    for _ in range(99):
        pace.started()
    assert pace.in_flight == 99
    assert abs(pace.expected_wait() - 100 / 20) < 0.3  # the 100th turn: about 5 s


def test_the_last_rate_holds_when_a_burst_begins_after_a_quiet_spell() -> None:
    clock = Clock()
    pace = TurnPace(clock, window_s=5.0)
    for _ in range(10):
        pace.started()
        clock.now += 0.1
        pace.finished()
    clock.now += 60  # nothing finished for a minute
    for _ in range(50):
        pace.started()
    assert pace.expected_wait() > 4.0  # 51 turns at the last rate (10 per second)


def test_finishing_more_than_started_never_goes_negative() -> None:
    pace = TurnPace(Clock())
    pace.finished()
    assert pace.in_flight == 0
