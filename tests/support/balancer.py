"""A tiny TCP load balancer in the test's reactor, standing in for the one in front of the nodes.

Each accepted connection is forwarded to the next backend, round-robin; a
backend that refuses the connection (a stopped or draining node) is skipped
for the next one, and a connection no backend accepts is dropped.  Backends
are added and removed while it runs, as a real balancer's health checks
would.  So a socket.io-client that reconnects through it lands on another
node, as it would in production::

    balancer = Balancer(reactor, [node_a.port, node_b.port]).start()
    sio.connect("c1", balancer.url, ...)
    balancer.remove(node_a.port)       # new connections avoid node A
    await balancer.stop()              # stops listening, drops every connection

Bytes are relayed unchanged in both directions, with flow control (each side
is the other's producer); when either side closes, so does the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

__all__ = ["Balancer"]

HOST = "127.0.0.1"
#: How long one backend may take to accept before the next one is tried.
CONNECT_TIMEOUT = 1.0


class _Backend(Protocol):
    """The balancer's connection to a backend, relaying to its frontend."""

    frontend: _Frontend

    def connectionMade(self) -> None:
        self.frontend.attached(self)

    def dataReceived(self, data: bytes) -> None:
        self.frontend.transport.write(data)

    def connectionLost(self, reason: Failure) -> None:
        self.frontend.peer_lost()


class _BackendFactory(Factory):
    def __init__(self, frontend: _Frontend) -> None:
        self.frontend = frontend

    def buildProtocol(self, addr: Any) -> _Backend:
        backend = _Backend()
        backend.frontend = self.frontend
        return backend


class _Frontend(Protocol):
    """A client's connection to the balancer."""

    balancer: Balancer

    def __init__(self) -> None:
        self.backend: _Backend | None = None
        self.backend_port: int | None = None
        self._buffer: list[bytes] = []
        self._closed = False
        self._connecting: Deferred[Any] | None = None

    def connectionMade(self) -> None:
        self.balancer.frontends.add(self)
        # Nothing is read until a backend is there to take it.
        self.transport.pauseProducing()
        Deferred.fromCoroutine(self._route(self.balancer.candidates()))

    async def _route(self, candidates: list[int]) -> None:
        for port in candidates:
            if self._closed:
                return
            endpoint = TCP4ClientEndpoint(
                self.balancer.reactor, HOST, port, timeout=CONNECT_TIMEOUT
            )
            self._connecting = endpoint.connect(_BackendFactory(self))
            try:
                await self._connecting
            except ConnectError:
                self.balancer.refused.append(port)
                continue
            except Exception:  # cancelled: the client left while we were connecting
                return
            finally:
                self._connecting = None
            self.backend_port = port
            self.balancer.routed.append(port)
            return
        if not self._closed:
            self.transport.abortConnection()

    def attached(self, backend: _Backend) -> None:
        if self._closed:
            backend.transport.abortConnection()
            return
        self.backend = backend
        for data in self._buffer:
            backend.transport.write(data)
        self._buffer.clear()
        # Flow control both ways: a slow reader pauses the writer.
        backend.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(backend.transport, True)
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.backend is None:
            self._buffer.append(data)
        else:
            self.backend.transport.write(data)

    def peer_lost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._closed = True
        self.balancer.frontends.discard(self)
        if self._connecting is not None:
            self._connecting.cancel()
        if self.backend is not None:
            self.backend.transport.loseConnection()

    def abort(self) -> None:
        if self.backend is not None:
            self.backend.transport.abortConnection()
        self.transport.abortConnection()


class _FrontendFactory(Factory):
    noisy = False

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def buildProtocol(self, addr: Any) -> _Frontend:
        frontend = _Frontend()
        frontend.balancer = self.balancer
        return frontend


class Balancer:
    """Round-robin TCP forwarding to backend ports of 127.0.0.1.

    :param reactor: the running reactor (the test's).
    :param backends: ports to forward to, in round-robin order.
    """

    def __init__(self, reactor: Any, backends: Iterable[int] = ()) -> None:
        self.reactor = reactor
        self.backends: list[int] = list(backends)
        self.frontends: set[_Frontend] = set()
        #: The backend port chosen for each forwarded connection, in order.
        self.routed: list[int] = []
        #: Backend ports that refused a connection, in order.
        self.refused: list[int] = []
        self._turn = 0
        self._port: IListeningPort | None = None

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1."""
        self._port = self.reactor.listenTCP(0, _FrontendFactory(self), interface=HOST)
        return self

    @property
    def port(self) -> int:
        assert self._port is not None, "the balancer is not started"
        return int(self._port.getHost().port)

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``, what socket.io-client takes."""
        return f"ws://{HOST}:{self.port}"

    def add(self, port: int) -> None:
        if port not in self.backends:
            self.backends.append(port)

    def remove(self, port: int) -> None:
        """New connections no longer go to ``port``; those already there stay."""
        if port in self.backends:
            self.backends.remove(port)

    def candidates(self) -> list[int]:
        """The backends in the order a new connection tries them: the next in turn first."""
        if not self.backends:
            return []
        start = self._turn % len(self.backends)
        self._turn += 1
        return self.backends[start:] + self.backends[:start]

    def connections_to(self, port: int) -> int:
        """How many forwarded connections to ``port`` are open now."""
        return sum(1 for f in self.frontends if f.backend is not None and f.backend_port == port)

    async def stop(self) -> None:
        """Stop listening and drop every connection, both sides."""
        port, self._port = self._port, None
        for frontend in list(self.frontends):
            frontend.abort()
        if port is not None:
            await port.stopListening()
