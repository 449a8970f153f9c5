"""One reactor timer for many connection deadlines.

Every connection has a heartbeat deadline, most have a connect deadline, and
they move on every pong.  A ``DelayedCall`` each would cost a heap operation per
change and a few hundred bytes per connection; the wheel instead groups
deadlines into ticks of ``resolution`` seconds, keeps one ``DelayedCall`` for the
earliest tick, and cancels lazily.  Deadlines are rounded up, never down: a
timer never fires early, and at most ``resolution`` late.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["Timer", "TimerWheel"]


class Timer:
    """A handle on a scheduled call; :meth:`cancel` is O(1) and idempotent."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    @property
    def active(self) -> bool:
        """Whether the call is still to happen."""
        return self.fn is not None

    def cancel(self) -> None:
        """Make sure the call does not happen."""
        self.fn = None
        self.args = ()


class TimerWheel:
    """Schedules calls on ``clock``, coalesced into ticks of ``resolution`` seconds."""

    log = Logger()

    def __init__(self, clock: IReactorTime, resolution: float = 0.05) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self._clock = clock
        self._resolution = resolution
        self._buckets: dict[int, list[Timer]] = {}
        self._ticks: list[int] = []
        self._wakeup: IDelayedCall | None = None
        self._wakeup_tick: int | None = None

    def __len__(self) -> int:
        """Scheduled timers, cancelled ones included until their tick passes."""
        return sum(len(b) for b in self._buckets.values())

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` in ``delay`` seconds (rounded up to the next tick)."""
        tick = math.ceil((self._clock.seconds() + max(delay, 0.0)) / self._resolution)
        timer = Timer(fn, args)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [timer]
            heapq.heappush(self._ticks, tick)
            if self._wakeup_tick is None or tick < self._wakeup_tick:
                self._arm(tick)
        else:
            bucket.append(timer)
        return timer

    def _arm(self, tick: int) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        delay = max(tick * self._resolution - self._clock.seconds(), 0.0)
        self._wakeup_tick = tick
        self._wakeup = self._clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._wakeup = self._wakeup_tick = None
        now_tick = math.floor(self._clock.seconds() / self._resolution + 1e-9)
        ticks, buckets = self._ticks, self._buckets
        while ticks and ticks[0] <= now_tick:
            for timer in buckets.pop(heapq.heappop(ticks)):
                fn = timer.fn
                if fn is None:
                    continue
                args = timer.args
                timer.cancel()
                try:
                    fn(*args)
                except Exception:
                    self.log.failure("timer callback {fn!r} failed", fn=fn)
        if ticks:
            self._arm(ticks[0])

    def stop(self) -> None:
        """Drop every pending timer (used at shutdown)."""
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = self._wakeup_tick = None
        for bucket in self._buckets.values():
            for timer in bucket:
                timer.cancel()
        self._buckets.clear()
        self._ticks.clear()
