"""Is the shared backend answering?  Logged once per outage, not once per call.

A Redis outage would otherwise log one error per packet of every client.  The
first failure of an episode is logged with its cause, the recovery with the
episode's length and failure count, nothing in between.  ``dirty`` remembers
that some write was lost, so the node reconciles its entries once it can.

A backend comes back unevenly: the registry's pool reconnects before the bus
publisher, and a call that began during the outage fails after the first one
that succeeds.  A failure within :data:`RELAPSE_WINDOW` of a recovery is
therefore the same outage relapsing, logged as a warning, not a new episode.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["RELAPSE_WINDOW", "BackendHealth"]

#: Seconds after a recovery during which a failure continues the same outage.
RELAPSE_WINDOW = 5.0


class BackendHealth:
    """Availability of one backend as this node experiences it."""

    log = Logger()

    def __init__(self, clock: IReactorTime, name: str = "Redis") -> None:
        self._clock = clock
        self.name = name
        self.available = True
        #: A write (or a kick sent to this node) may have been lost: the
        #: registry needs reconciling.
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
        now = self._clock.seconds()
        if self.episodes and now - self.recovered_at < RELAPSE_WINDOW:
            self.log.warn(
                "{backend} failed again {after:.1f}s after recovering ({operation}: {error});"
                " counted as the same outage",
                backend=self.name,
                after=now - self.recovered_at,
                operation=operation,
                error=str(error) or type(error).__name__,
                event="backend_relapse",
            )
            return
        self.episodes += 1
        self._since = now
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
