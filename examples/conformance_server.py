"""The reference server of the socket.io-protocol conformance test suite, on our public API.

The suites of ``socketio/engine.io-protocol`` and ``socketio/socket.io-protocol``
expect a server with pingInterval 300 ms, pingTimeout 200 ms, maxPayload
1000000 and connectTimeout 1000 ms that, on the main namespace and on
``/custom``:

* emits ``("auth", <the CONNECT payload>)`` to every socket that connects;
* answers ``"message"`` with ``"message-back"`` and the same arguments;
* acks ``"message-with-ack"`` with the same arguments.

Run it for the official suite (which expects port 3000)::

    python examples/conformance_server.py --port 3000

or start it in-process, on any reactor, from a test::

    server = await listen(reactor, "tcp:0:interface=127.0.0.1")
    ...
    await server.stop()

It uses only :mod:`caas_socket.server` and
:class:`~caas_socket.transport.websocket.EngineWebSocketFactory`; no CaaS
behaviour (authentication, device registry) is involved.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort

from caas_socket.server import Namespace, Settings, Socket, SocketServer
from caas_socket.transport.websocket import EngineWebSocketFactory

__all__ = ["SETTINGS", "RunningServer", "build_server", "listen", "main"]

#: The reference configuration of the conformance suites.
SETTINGS = Settings(
    ping_interval=0.3,
    ping_timeout=0.2,
    max_payload=1_000_000,
    connect_timeout=1.0,
)


def _greet(socket: Socket) -> None:
    socket.emit("auth", dict(socket.handshake.auth))


def _message(socket: Socket, *args: Any) -> None:
    socket.emit("message-back", *args)


def _message_with_ack(_socket: Socket, *args: Any) -> tuple[Any, ...]:
    # A tuple spreads into the ack's arguments, so the client gets back exactly what it sent.
    return args


def _serve(nsp: Namespace) -> None:
    nsp.on_connect(_greet)
    nsp.on("message", _message)
    nsp.on("message-with-ack", _message_with_ack)


def build_server(clock: Any, settings: Settings = SETTINGS) -> SocketServer:
    """The conformance behaviour on ``/`` and ``/custom``; any other namespace is refused."""
    io = SocketServer(clock, settings)
    _serve(io.main)
    _serve(io.of("/custom"))
    return io


@attrs.define
class RunningServer:
    """A listening conformance server; :meth:`stop` closes the port and every connection."""

    socket_server: SocketServer
    port: IListeningPort

    @property
    def host(self) -> str:
        return str(self.port.getHost().host)

    @property
    def port_number(self) -> int:
        return int(self.port.getHost().port)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port_number}"

    async def stop(self) -> None:
        await self.port.stopListening()
        self.socket_server.close_all("server shutting down")
        self.socket_server.wheel.stop()


async def listen(
    reactor: Any,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    settings: Settings = SETTINGS,
) -> RunningServer:
    """Listen on ``endpoint`` (a Twisted server endpoint string) with ``reactor``.

    Autobahn's own timers (handshake and close timeouts) run on txaio's loop,
    which is the global reactor unless ``txaio.config.loop`` says otherwise.
    """
    io = build_server(reactor, settings)
    factory = EngineWebSocketFactory(io, reactor)
    port = await serverFromString(reactor, endpoint).listen(factory)
    return RunningServer(io, port)


def main(argv: list[str] | None = None) -> None:
    """``python examples/conformance_server.py [--host H] [--port P]``; port 0 picks a free one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="TCP port, 0 for any (3000)")
    args = parser.parse_args(argv)

    import txaio
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    txaio.use_twisted()
    txaio.config.loop = reactor
    # Autobahn logs every frame at debug level; info shows one line per socket state change.
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stdout),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    def started(server: RunningServer) -> None:
        # Tests read this line to learn the port when they pass --port 0.
        print(f"conformance server listening on {server.host}:{server.port_number}", flush=True)

    def failed(failure: Any) -> None:
        print(f"conformance server cannot listen: {failure.getErrorMessage()}", flush=True)
        reactor.stop()

    endpoint = f"tcp:{args.port}:interface={args.host}"
    reactor.callWhenRunning(
        lambda: Deferred.fromCoroutine(listen(reactor, endpoint)).addCallbacks(started, failed)
    )
    reactor.run()


if __name__ == "__main__":
    main()
