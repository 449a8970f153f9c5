"""Periodic work that survives its own failures.

A bare ``LoopingCall`` stops for good after one exception; a sweep that dies
silently is how registries drift.  Here a failing tick is logged and the loop
goes on, and stopping waits for the tick in flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["PeriodicService"]


class PeriodicService(Service):
    """Run ``work`` every ``interval`` seconds; a failure is logged, never fatal."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        work: Callable[[], Awaitable[None]],
        name: str,
        *,
        now: bool = True,
    ) -> None:
        self.name = name
        self.interval = interval
        self._work = work
        self._now = now
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self._guarded()))
        self._loop.clock = clock
        self._done: Deferred[LoopingCall] | None = None
        self.ticks = 0
        self.failures = 0

    async def _guarded(self) -> None:
        self.ticks += 1
        try:
            await self._work()
        except Exception:
            self.failures += 1
            self.log.failure(
                "{name} failed; next try in {interval}s", name=self.name, interval=self.interval
            )

    def startService(self) -> None:
        super().startService()
        self._done = self._loop.start(self.interval, now=self._now)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        done, self._done = self._done, None
        if done is None:
            return succeed(None)
        return done.addCallback(lambda _: None)
