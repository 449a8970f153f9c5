"""Is the shared backend answering?  Logged once per outage, not once per call.

A Redis outage would otherwise log one error per packet of every client.  The
first failure of an episode is logged with its cause, the recovery with the
episode's length and failure count, nothing in between.  ``dirty`` remembers
that some write was lost, so the node reconciles its entries once it can.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["BackendHealth"]


class BackendHealth:
    """Availability of one backend as this node experiences it."""

    log = Logger()

    def __init__(self, clock: IReactorTime, name: str = "Redis") -> None:
        self._clock = clock
        self.name = name
        self.available = True
        #: A write may have been lost: the registry needs reconciling.
        self.dirty = False
        self.episodes = 0
        #: When the last outage ended (or this node started): see NodeLifecycle.sweep.
        self.recovered_at = clock.seconds()
        self._since = 0.0
        self._failures = 0

    def failed(self, operation: str, error: BaseException) -> None:
        """A call failed; the first failure of an episode is logged."""
        self.dirty = True
        self._failures += 1
        if not self.available:
            return
        self.available = False
        self.episodes += 1
        self._since = self._clock.seconds()
        self.log.error(
            "{backend} unavailable ({operation}: {error}); serving local connections,"
            " will reconcile when it is back",
            backend=self.name,
            operation=operation,
            error=str(error) or type(error).__name__,
            event="backend_down",
        )

    def succeeded(self) -> None:
        """A call succeeded; ends an episode if one was running."""
        if self.available:
            return
        self.available = True
        self.recovered_at = self._clock.seconds()
        self.log.info(
            "{backend} available again after {duration:.1f}s ({failures} failed calls)",
            backend=self.name,
            duration=self._clock.seconds() - self._since,
            failures=self._failures,
            event="backend_up",
        )
        self._failures = 0
