"""The clock a call runs on: the event loop's monotonic time, or a fake one in unit tests."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock (monotonic seconds)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time for unit tests: sleepers wake only when the test advances the clock."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), next(self._order), fut))
        await fut

    async def settle(self) -> None:
        """Let every task that can run, run."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def advance(self, seconds: float, step: float = 0.02) -> None:
        """Move time forward in ``step``s, waking sleepers in order and letting tasks run between."""
        end = self.t + seconds
        await self.settle()
        while self.t < end - 1e-9:
            self.t = min(end, self.t + step)
            while self._sleepers and self._sleepers[0][0] <= self.t + 1e-9:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
