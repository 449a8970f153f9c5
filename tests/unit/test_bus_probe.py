"""The bus probe: a deaf subscriber is reconnected, a Redis outage is not mistaken for one."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.task import Clock

from caas_socket.cluster import messages
from caas_socket.cluster.bus import Bus
from caas_socket.redis_connection import RedisUnavailable, RedisURL
from caas_socket.registry.health import BackendHealth

INTERVAL = 2.0


class Publisher:
    """Stands for the publisher connection: records, or fails like Redis away."""

    endpoint = None

    def __init__(self) -> None:
        self.down = False
        self.published: list[tuple[bytes, bytes]] = []

    async def execute(self, command: str, channel: bytes, payload: bytes) -> int:
        if self.down:
            raise RedisUnavailable("Redis did not answer PUBLISH within 0.5s: no connection")
        self.published.append((channel, payload))
        return 1


class Transport:
    aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1


class Subscriber:
    def __init__(self) -> None:
        self.transport = Transport()


def make_bus(clock: Clock, publisher: Publisher) -> tuple[Bus, Subscriber]:
    bus = Bus(
        clock,
        RedisURL.parse("redis://127.0.0.1:1"),
        publisher,  # type: ignore[arg-type]
        prefix="caas",
        server_id="n1",
        handler=lambda message: None,
        health=BackendHealth(clock),
        probe_interval=INTERVAL,
    )
    subscriber = Subscriber()
    bus._subscriber = subscriber  # type: ignore[assignment]  # as after a subscription
    return bus, subscriber


async def tick(bus: Bus, clock: Clock) -> None:
    clock.advance(INTERVAL)
    await bus._probe()


@pytest_twisted.ensureDeferred
async def test_a_probe_that_never_comes_back_reconnects_the_subscriber() -> None:
    clock, publisher = Clock(), Publisher()
    bus, subscriber = make_bus(clock, publisher)
    for _ in range(3):  # sent at 2 s, still waiting at 6 s
        await tick(bus, clock)
    assert subscriber.transport.aborted == 0
    await tick(bus, clock)  # 6 s after it was sent: more than two intervals
    assert subscriber.transport.aborted == 1


@pytest_twisted.ensureDeferred
async def test_probes_that_come_back_keep_the_subscriber() -> None:
    clock, publisher = Clock(), Publisher()
    bus, subscriber = make_bus(clock, publisher)
    for _ in range(10):
        await tick(bus, clock)
        bus.received(publisher.published[-1][1])  # Redis echoes it to our channel
    assert subscriber.transport.aborted == 0
    assert bus.verified


@pytest_twisted.ensureDeferred
async def test_while_publishing_fails_the_subscriber_is_not_blamed() -> None:
    """Redis paused, then the publisher reconnecting: no probe left, none can come back."""
    clock, publisher = Clock(), Publisher()
    bus, subscriber = make_bus(clock, publisher)
    publisher.down = True
    for _ in range(5):
        await tick(bus, clock)
    publisher.down = False
    await tick(bus, clock)
    bus.received(publisher.published[-1][1])
    await tick(bus, clock)
    assert subscriber.transport.aborted == 0
    assert bus.verified


def test_a_stale_probe_does_not_verify() -> None:
    clock, publisher = Clock(), Publisher()
    bus, _ = make_bus(clock, publisher)
    bus.received(messages.encode(messages.Probe("n1", "not-ours")))
    assert not bus.verified


class SubscribingProtocol(Subscriber):
    async def subscribe(self, channels: list[bytes]) -> None:
        self.channels = channels


@pytest_twisted.ensureDeferred
async def test_a_resubscription_asks_for_a_reconcile() -> None:
    """Kicks published while the subscriber was away are lost: the registry must tell."""
    clock, publisher = Clock(), Publisher()
    bus, _ = make_bus(clock, publisher)
    await bus._subscribe(SubscribingProtocol())  # type: ignore[arg-type]
    assert not bus.health.dirty  # the first one: the node reconciles as it starts
    await bus._subscribe(SubscribingProtocol())  # type: ignore[arg-type]
    assert bus.health.dirty
