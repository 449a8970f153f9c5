"""Client activity: sampled per connection, flushed in batches, and idle sweeps.

Activity is any Socket.IO message from the client (heartbeat pongs of
Engine.IO do not count: they prove the network, not the app).  Sessions only
count messages; every ``flush_interval`` the tracker samples the counters,
stamps the connections that moved with the sample time, and writes those in
one batch to the registry.  So there is no timer and no I/O per packet, and
``lastActivity`` in the registry lags by at most one interval.

The sweep closes this node's connections idle for longer than
``idle_timeout`` (a transport close: a live client reconnects and starts
afresh), and looks for stale entries cluster-wide: entries of other nodes are
reported to their owner, which closes them only if its own, fresher view
agrees; entries of this node that have no live connection are ghosts and
are removed.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..registry.health import BackendHealth
from ..registry.interfaces import Entry, Registry, RegistryUnavailable
from .devices import ENTRY, LocalKicker

__all__ = ["ActivityTracker"]

IDLE_REASON = "idle timeout"


class ActivityTracker:
    """Last activity of this node's connections, and the idle sweep."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        registry: Registry,
        local: LocalKicker,
        health: BackendHealth,
        *,
        server_id: str,
        idle_timeout: float,
        flush_interval: float,
        ask_owner: Callable[[Entry, int], None] | None = None,
        sweep_limit: int = 1000,
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._local = local
        self._health = health
        self._server_id = server_id
        self.idle_timeout = idle_timeout
        self.flush_interval = flush_interval
        self._ask_owner = ask_owner
        self._sweep_limit = sweep_limit
        #: socket id -> (messages counted at the last sample, last activity in ms)
        self._seen: dict[str, tuple[int, int]] = {}

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def last_activity(self, socket_id: str) -> int | None:
        """Last activity (ms) of a local connection, as of the last sample."""
        seen = self._seen.get(socket_id)
        return None if seen is None else seen[1]

    def sample(self) -> list[tuple[Entry, int]]:
        """Stamp connections that received messages since the last sample."""
        now = self._now_ms()
        previous, current = self._seen, {}
        moved: list[tuple[Entry, int]] = []
        for socket_id, socket in self._local.registered.items():
            entry: Entry = socket.data[ENTRY]
            count = socket.connection.session.messages_in
            before = previous.get(socket_id)
            if before is None:
                last = entry.last_activity
                # Messages before the first sample (the CONNECT itself excepted).
                if count > 1:
                    last = now
                    moved.append((entry, now))
            elif count != before[0]:
                last = now
                moved.append((entry, now))
            else:
                last = before[1]
            current[socket_id] = (count, last)
        self._seen = current
        return moved

    async def flush(self) -> None:
        """Write the activity of the last interval, in one batch."""
        moved = self.sample()
        if not moved:
            return
        try:
            await self._registry.touch(moved)
        except RegistryUnavailable as e:
            self._health.failed("touch", e)
        else:
            self._health.succeeded()

    async def sweep(self) -> None:
        """Close idle connections here; report stale entries elsewhere to their owner."""
        self.sample()
        cutoff = self._now_ms() - int(self.idle_timeout * 1000)
        closed = 0
        for socket_id, (_, last) in list(self._seen.items()):
            socket = self._local.registered.get(socket_id)
            if socket is not None and last < cutoff:
                self._close_idle(socket_id, last)
                closed += 1
        asked = ghosts = 0
        # Registry times lag by up to one flush: do not act on what may be fresh.
        stale_before = cutoff - int(self.flush_interval * 1000)
        try:
            stale = await self._registry.find_stale(stale_before, self._sweep_limit)
            for entry in stale:
                if entry.server_id != self._server_id:
                    if self._ask_owner is not None:
                        self._ask_owner(entry, stale_before)
                        asked += 1
                elif await self.check_idle(entry, stale_before) == "ghost":
                    ghosts += 1
        except RegistryUnavailable as e:
            self._health.failed("sweep", e)
        self.log.info(
            "idle sweep: {closed} closed here, {asked} reported to their node,"
            " {ghosts} ghost entries removed",
            closed=closed,
            asked=asked,
            ghosts=ghosts,
            event="sweep",
        )

    async def check_idle(self, entry: Entry, before: int) -> str:
        """Act on a stale entry of this node: ``closed``, ``active`` or ``ghost``."""
        socket = self._local.registered.get(entry.socket_id)
        if socket is None:
            if entry.socket_id in self._local.pending:
                return "active"
            await self._registry.unregister(entry)
            return "ghost"
        last = self.last_activity(entry.socket_id)
        if last is not None and last < before:
            self._close_idle(entry.socket_id, last)
            return "closed"
        return "active"

    def _close_idle(self, socket_id: str, last: int) -> None:
        socket = self._local.registered.get(socket_id)
        if socket is None:
            return
        self.log.info(
            "closing idle socket {socket_id} (no message for {idle:.0f}s)",
            socket_id=socket_id,
            idle=(self._now_ms() - last) / 1000,
            reason=IDLE_REASON,
            event="sweep_close",
            **socket.tags,
        )
        self._seen.pop(socket_id, None)
        socket.close_connection(IDLE_REASON)
