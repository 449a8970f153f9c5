"""``sync`` traffic between the devices of each user, and the count of what arrived.

Every message carries a number.  When it is sent, the other devices of the
sender's user that are connected (as their clients see it) are the expected
receivers; each message belongs to the *window* open at that moment (say
``steady`` or ``fault:redis-restart``).  :meth:`SyncTraffic.account` then
counts, for one window, the expected deliveries, those that arrived, those
that arrived twice, those that reached a client of another user (an isolation
breach), and the delivery latency.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import attrs
from twisted.internet.task import LoopingCall

from tests.reliability.population import Population

__all__ = ["Account", "SyncTraffic"]


@attrs.frozen
class _Sent:
    window: str
    sender: str
    user: tuple[str, str]
    receivers: tuple[str, ...]
    at: float
    steady: bool


@attrs.frozen
class Account:
    """The deliveries of one window (steady users only, unless said otherwise)."""

    window: str
    messages: int
    expected: int
    delivered: int
    duplicates: int
    foreign: int  # delivered to a client of another user or tenant
    p50_ms: float
    p99_ms: float
    #: a few lost deliveries: (message number, sender, receiver, sent at (monotonic))
    lost_sample: tuple[tuple[int, str, str, float], ...] = ()

    @property
    def lost(self) -> int:
        return self.expected - self.delivered


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


class SyncTraffic:
    """Each user with two connected devices sends one ``sync`` every ``interval`` seconds."""

    def __init__(self, population: Population, reactor: Any, *, interval: float = 0.5) -> None:
        self.population = population
        self.reactor = reactor
        self.interval = interval
        self.window = "warmup"
        self.sent: dict[int, _Sent] = {}
        self.count = 0
        self._turn = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._tick_seconds = 0.1

    def start(self) -> None:
        self._loop.start(self._tick_seconds, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        population = self.population
        tracker = population.tracker
        tracker.update()
        users = list(population.users().items())
        if not users:
            return
        share = max(1, math.ceil(len(users) * self._tick_seconds / self.interval))
        now = time.monotonic()
        for _ in range(min(share, len(users))):
            key, slots = users[self._turn % len(users)]
            self._turn += 1
            up = [s for s in slots if tracker.sid.get(s.client) is not None]
            if len(up) < 2:
                continue
            sender = up[self._turn % len(up)]
            receivers = tuple(s.client for s in up if s is not sender)
            self.count += 1
            n = self.count
            self.sent[n] = _Sent(self.window, sender.client, key, receivers, now, sender.steady)
            population.driver.emit(sender.client, "sync", {"n": n})

    def account(self, window: str, *, steady_only: bool = True, forget: bool = True) -> Account:
        """Count the deliveries of ``window``; call it once the messages had time to arrive."""
        tracker = self.population.tracker
        tracker.update()
        clients = self.population.clients
        numbers = [n for n, m in self.sent.items() if m.window == window]
        expected = delivered = duplicates = foreign = messages = 0
        latencies: list[float] = []
        sample: list[tuple[int, str, str, float]] = []
        for n in numbers:
            sent = self.sent[n]
            arrived = tracker.received.get(n, [])
            for client, _ in arrived:
                if clients.get(client, ("?", "?"))[:2] != sent.user:
                    foreign += 1
            if steady_only and not sent.steady:
                continue
            messages += 1
            seen: dict[str, int] = defaultdict(int)
            for client, at in arrived:
                seen[client] += 1
                if seen[client] == 1 and client in sent.receivers:
                    latencies.append((at - sent.at) * 1000)
            expected += len(sent.receivers)
            delivered += sum(1 for r in sent.receivers if seen.get(r))
            if len(sample) < 10:
                sample += [(n, sent.sender, r, sent.at) for r in sent.receivers if not seen.get(r)]
            duplicates += sum(c - 1 for c in seen.values() if c > 1)
        if forget:
            for n in numbers:
                del self.sent[n]
                tracker.received.pop(n, None)
        return Account(
            window,
            messages,
            expected,
            delivered,
            duplicates,
            foreign,
            round(_percentile(latencies, 0.5), 1),
            round(_percentile(latencies, 0.99), 1),
            tuple(sample[:10]),
        )
