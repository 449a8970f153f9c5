"""Moving clients off a stopping node without a stampede.

Connections are closed at the transport (never with a Socket.IO DISCONNECT,
which would stop socket.io-client from reconnecting), in a random order and
in batches spread over the drain period, so the other nodes see a steady
trickle of reconnects rather than every client at once.  Small nodes do not
wait needlessly: at most ``rate`` closes per second unless the period demands
more.
"""

from __future__ import annotations

import math
import random
from typing import Any

from twisted.internet.task import deferLater
from twisted.logger import Logger

from .server import SocketServer

__all__ = ["Drainer"]

DRAIN_REASON = "server shutting down"


class Drainer:
    """Closes every connection of ``server`` over at most ``period`` seconds."""

    log = Logger()

    def __init__(
        self,
        clock: Any,
        server: SocketServer,
        period: float,
        *,
        rate: float = 100.0,
        batch_interval: float = 0.25,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._server = server
        self.period = period
        self._rate = rate
        self._batch_interval = batch_interval
        self._rng = rng or random.Random()
        self.draining = False
        self.remaining = 0
        self.closed = 0

    async def drain(self) -> None:
        """Close everything; returns when every connection is gone (or was dropped)."""
        self.draining = True
        connections = list(self._server.connections.values())
        self._rng.shuffle(connections)
        self.remaining = len(connections)
        duration = min(self.period, len(connections) / self._rate)
        batches = max(1, math.ceil(duration / self._batch_interval))
        size = math.ceil(len(connections) / batches) if connections else 0
        started = self._clock.seconds()
        for index in range(batches):
            batch = connections[index * size : (index + 1) * size]
            if not batch:
                break
            # Each batch at its slot, jittered within it.
            due = started + (index + self._rng.random()) * duration / batches
            delay = due - self._clock.seconds()
            if delay > 0:
                await deferLater(self._clock, delay)
            for connection in batch:
                if not connection.closed:
                    connection.close(DRAIN_REASON)
            self.closed += len(batch)
            self.remaining = len(connections) - self.closed
            self.log.info(
                "draining: {closed} connections closed, {remaining} to go",
                closed=self.closed,
                remaining=self.remaining,
                event="drain",
            )
        # Closing handshakes take a moment; give them a bounded one.
        for _ in range(20):
            if not self._server.connections:
                break
            await deferLater(self._clock, 0.1)
        self.remaining = 0
