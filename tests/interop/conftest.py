"""Fixtures of the interop tests: real servers, real clients, always cleaned up.

* ``caas_node(*args, **kwargs) -> CaasNode``: start a ``twistd -n caas-socket``
  node on a free port of 127.0.0.1 (``args`` are caas-socket options); every
  node is stopped (SIGTERM, then SIGKILL) when the test ends.
* ``sio``: a :class:`~tests.support.sio_driver.SioDriver`, the official
  socket.io-client in one node process, killed when the test ends.
* ``conformance_server``: ``examples/conformance_server.py`` as a process, one per module.
* ``inprocess_conformance_server``: the same server, in this process, on the test's reactor.
* ``asking_server``: an in-process server whose connect handler asks the client
  ``("ask", 1)`` with an ack and emits ``("answer", *ack args)`` back.
* ``secret`` and ``mint(user, tenant, **kwargs)``: HS256 tokens the nodes accept.

When a test fails, the output of every server still running and the events
of the driver are printed with the failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from caas_socket.auth import mint_token
from caas_socket.server import AckError, Settings, Socket, SocketServer
from caas_socket.transport.websocket import EngineWebSocketFactory
from examples.conformance_server import RunningServer, listen
from tests.support.nodes import CaasNode, ConformanceServer, ServerProcess
from tests.support.sio_driver import SioDriver

SECRET = "interop-secret-of-at-least-32-bytes!"

#: Whether the test's call phase failed, for fixtures deciding what to print at teardown.
_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture(autouse=True)
def _report_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """On failure, print what the servers logged during the test."""
    marks = {p: p.mark() for p in list(ServerProcess.live)}
    yield
    if not request.node.stash.get(_FAILED, False):
        return
    for process in list(ServerProcess.live):
        since = marks.get(process, 0)
        print(f"\n===== {process.name} pid {process.pid} port {process.port} (output) =====")
        print("\n".join(process.lines[since:]))


@pytest.fixture
def caas_node(request: pytest.FixtureRequest) -> Iterator[Callable[..., CaasNode]]:
    """Factory: ``caas_node("--jwt-secret", SECRET, ...)`` starts a node; all stop at teardown."""
    nodes: list[CaasNode] = []

    def start(*args: str, **kwargs: Any) -> CaasNode:
        node = CaasNode(args, **kwargs)
        nodes.append(node)
        return node.start()

    yield start
    failed = request.node.stash.get(_FAILED, False)
    for node in nodes:
        node.stop()
        if failed:
            print(f"\n===== caas-socket pid {node.pid} {node.args} (full output) =====")
            print(node.log)


@pytest.fixture
def sio(request: pytest.FixtureRequest) -> Iterator[SioDriver]:
    """The official socket.io-client, remote-controlled; killed at teardown."""
    driver = SioDriver(reactor).start()
    yield driver
    driver.stop()
    if request.node.stash.get(_FAILED, False):
        print("\n===== socket.io-client driver events =====")
        print(driver.describe())
        if driver.stderr:
            print("----- driver stderr -----")
            print("\n".join(driver.stderr))


@pytest.fixture(scope="module")
def conformance_server() -> Iterator[ConformanceServer]:
    """``examples/conformance_server.py`` on a free port, for the whole module."""
    server = ConformanceServer().start()
    yield server
    server.stop()


@pytest.fixture
def inprocess_conformance_server() -> Iterator[RunningServer]:
    """``examples.conformance_server.listen(reactor)`` on a free port, stopped at teardown."""
    server = pytest_twisted.blockon(Deferred.fromCoroutine(listen(reactor)))
    yield server
    pytest_twisted.blockon(Deferred.fromCoroutine(server.stop()))


@pytest.fixture
def asking_server() -> Iterator[RunningServer]:
    """A server that calls its clients: ``await socket.call("ask", 1, timeout=2)`` on connect.

    The ack's arguments come back as ``("answer", *args)``; a missing ack as
    ``("no-answer", reason)``.
    """
    io = SocketServer(reactor, Settings(ping_interval=0.3, ping_timeout=0.2))

    @io.on_connect
    async def ask(socket: Socket) -> None:
        try:
            answer = await socket.call("ask", 1, timeout=2)
        except AckError as e:
            socket.emit("no-answer", str(e))
            return
        socket.emit("answer", *answer)

    port = reactor.listenTCP(0, EngineWebSocketFactory(io, reactor), interface="127.0.0.1")
    server = RunningServer(io, port)
    yield server
    pytest_twisted.blockon(Deferred.fromCoroutine(server.stop()))


@pytest.fixture
def secret() -> str:
    """The HS256 secret to give nodes (``--jwt-secret``); :func:`mint` signs with it."""
    return SECRET


@pytest.fixture
def mint() -> Callable[..., str]:
    """``mint(user, tenant="t1", key=SECRET, **kwargs)``: a token for a node run with ``secret``.

    ``kwargs`` go to :func:`caas_socket.auth.mint_token` (``ttl``, ``now``,
    ``tenant_claim``, extra claims).
    """

    def sign(user: str, tenant: str = "t1", *, key: str = SECRET, **kwargs: Any) -> str:
        return mint_token(key.encode(), sub=user, tenant_id=tenant, **kwargs)

    return sign
