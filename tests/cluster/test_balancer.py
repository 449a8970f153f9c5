"""The test balancer itself: round-robin, skipping refusing backends, runtime changes.

Backends are tiny in-reactor servers that greet each connection with their
name and echo what they receive; clients are plain Twisted TCP clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from tests.support.balancer import Balancer
from tests.support.redis_server import free_port


class _Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(self.factory.name + b"|")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for item in list(self._waiting):
            if item[0] in self.received:
                self._waiting.remove(item)
                item[1].callback(self.received)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)

    def until(self, text: bytes) -> Deferred[bytes]:
        if text in self.received:
            return Deferred.fromCoroutine(_now(self.received))
        waiting: Deferred[bytes] = Deferred()
        self._waiting.append((text, waiting))
        return waiting.addTimeout(3, reactor)


async def _now(value: bytes) -> bytes:
    return value


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    ports = []
    for name in (b"a", b"b", b"c"):
        factory = Factory.forProtocol(_Greeter)
        factory.name = name
        ports.append(reactor.listenTCP(0, factory, interface="127.0.0.1"))
    yield {"a": ports[0].getHost().port, "b": ports[1].getHost().port, "c": ports[2].getHost().port}
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def balancer() -> Iterator[Balancer]:
    started = Balancer(reactor).start()
    yield started
    pytest_twisted.blockon(Deferred.fromCoroutine(started.stop()))


async def _client(balancer: Balancer) -> _Client:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", balancer.port, timeout=2)
    return await connectProtocol(endpoint, _Client())


async def _greeting(balancer: Balancer) -> bytes:
    client = await _client(balancer)
    received = await client.until(b"|")
    client.transport.loseConnection()
    await client.closed
    return received


@pytest_twisted.ensureDeferred
async def test_round_robin_and_relay(balancer: Balancer, backends: dict[str, int]):
    for name in ("a", "b", "c"):
        balancer.add(backends[name])
    names = [await _greeting(balancer) for _ in range(6)]
    assert names == [b"a|", b"b|", b"c|", b"a|", b"b|", b"c|"]
    client = await _client(balancer)
    await client.until(b"|")
    client.transport.write(b"x" * 200_000 + b"!")
    assert (await client.until(b"!")).endswith(b"x" * 200_000 + b"!")
    assert balancer.connections_to(backends["a"]) == 1
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_skips_refusing_backends_and_drops_when_none_accepts(
    balancer: Balancer, backends: dict[str, int]
):
    dead = free_port()
    balancer.add(dead)
    balancer.add(backends["b"])
    assert [await _greeting(balancer) for _ in range(3)] == [b"b|"] * 3
    assert balancer.refused.count(dead) >= 2
    balancer.remove(backends["b"])
    client = await _client(balancer)
    await client.closed.addTimeout(3, reactor)
    assert client.received == b""
    balancer.remove(dead)
    balancer.add(backends["c"])
    assert await _greeting(balancer) == b"c|"


@pytest_twisted.ensureDeferred
async def test_a_closing_backend_closes_the_client(balancer: Balancer):
    closing = Factory.forProtocol(Protocol)
    closing.protocol = type(
        "Closer", (Protocol,), {"connectionMade": lambda self: self.transport.loseConnection()}
    )
    port = reactor.listenTCP(0, closing, interface="127.0.0.1")
    try:
        balancer.add(port.getHost().port)
        client = await _client(balancer)
        await client.closed.addTimeout(3, reactor)
    finally:
        await port.stopListening()
    await deferLater(reactor, 0, lambda: None)
    assert not balancer.frontends
