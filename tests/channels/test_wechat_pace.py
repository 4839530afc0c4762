"""channels.wechat_pace: when a new turn would be answered, on a clock the test drives."""
from __future__ import annotations

from channels.wechat_pace import MIN_FINISHES, MIN_IN_FLIGHT, TurnPace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def busy(pace: TurnPace, clock: Clock, finishes: int, every_s: float, queue: int = 20) -> None:
    """A queue of ``queue`` turns in flight, one finishing every ``every_s`` and another arriving."""
    while pace.in_flight < queue:
        pace.started()
    for _ in range(finishes):
        clock.now += every_s
        pace.finished()
        pace.started()


def test_no_queue_means_no_wait() -> None:
    clock = Clock()
    pace = TurnPace(clock)
    assert pace.expected_wait() == 0.0
    for _ in range(MIN_IN_FLIGHT - 1):
        pace.started()
    assert pace.expected_wait() == 0.0  # a few turns in flight are not a queue


def test_a_queue_waits_as_long_as_rasa_finishes_turns_under_it() -> None:
    clock = Clock()
    pace = TurnPace(clock, window_s=5.0)
    busy(pace, clock, finishes=40, every_s=0.05)  # 20 turns a second while busy
    for _ in range(79):
        pace.started()
    assert pace.in_flight == 99
    assert abs(pace.expected_wait() - 100 / 20) < 0.3  # the 100th turn: about 5 s


def test_light_traffic_is_never_judged_late() -> None:
    clock = Clock()
    pace = TurnPace(clock, window_s=5.0)
    for _ in range(30):  # one message every 2 s, each answered in 50 ms: no queue ever stood
        clock.now += 2.0
        pace.started()
        clock.now += 0.05
        pace.finished()
    for _ in range(5):  # then five at once
        pace.started()
    assert pace.expected_wait() == 0.0


def test_a_few_finishes_are_not_a_measure() -> None:
    clock = Clock()
    pace = TurnPace(clock, window_s=60.0)
    busy(pace, clock, finishes=MIN_FINISHES - 1, every_s=1.0)
    assert pace.expected_wait() == 0.0
    busy(pace, clock, finishes=1, every_s=1.0)
    assert pace.expected_wait() > 4.0  # 21 turns at one a second


def test_an_old_measure_expires() -> None:
    clock = Clock()
    pace = TurnPace(clock, window_s=5.0)
    busy(pace, clock, finishes=40, every_s=0.05)
    clock.now += 60
    assert pace.rate() == 0.0 and pace.expected_wait() == 0.0


def test_finishing_more_than_started_never_goes_negative() -> None:
    pace = TurnPace(Clock())
    pace.finished()
    assert pace.in_flight == 0


def test_the_loop_lag_is_the_largest_recent_delay() -> None:
    from channels.wechat_pace import LoopLag

    clock = Clock()
    lag = LoopLag(keep_s=2.0, clock=clock)
    assert lag.recent() == 0.0
    lag.record(0.8)
    clock.now += 0.5
    lag.record(0.1)
    assert lag.recent() == 0.8
    clock.now += 2.1
    lag.record(-0.01)  # woke a little early: no lag
    assert lag.recent() == 0.0


def test_the_probe_sees_a_blocked_loop() -> None:
    import asyncio
    import time

    from channels.wechat_pace import LoopLag

    async def scenario() -> float:
        lag = LoopLag(interval_s=0.01)
        lag.start()
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # a turn holding the loop, as parsing and predicting do
        await asyncio.sleep(0.05)
        return lag.recent()

    assert asyncio.run(scenario()) >= 0.25
