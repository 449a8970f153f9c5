"""A connect rate limit per client address: a token bucket each.

One address opening connections in a loop (a bug or an attack) must not cost
everyone else their connects.  Buckets refill at ``rate`` per second up to
``burst``; the table of addresses is bounded, forgetting full buckets first
(those addresses are back to normal anyway).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

__all__ = ["ConnectRateLimiter"]


class ConnectRateLimiter:
    """Allows ``burst`` connects at once per address, then ``rate`` per second."""

    def __init__(
        self, clock: IReactorTime, rate: float, burst: int, max_addresses: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._clock = clock
        self.rate = rate
        self.burst = float(burst)
        self._max = max_addresses
        #: address -> (tokens, time of the last update)
        self._buckets: dict[str, tuple[float, float]] = {}
        self.refused = 0

    def allow(self, address: str) -> bool:
        """Take a token for ``address``; ``False`` when it has none left."""
        now = self._clock.seconds()
        tokens, updated = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.refused += 1
        self._buckets[address] = (tokens, now)  # re-inserted: most recent last
        if len(self._buckets) > self._max:
            self._forget(now)
        return allowed

    def _forget(self, now: float) -> None:
        """Drop the least recently seen addresses until the table is back to 90 %."""
        excess = len(self._buckets) - int(self._max * 0.9)
        for address in list(self._buckets)[:excess]:
            del self._buckets[address]
