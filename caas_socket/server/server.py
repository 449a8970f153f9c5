"""The application-facing root: namespaces, settings and open connections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..engine.session import EngineSession, Transport
from ..protocol.engineio import OpenHandshake
from ..timers import TimerWheel
from .connection import Connection
from .namespace import BroadcastOperator, Middleware, Namespace
from .settings import Handshake, Settings
from .socket import new_id

__all__ = ["SocketServer"]

H = TypeVar("H", bound=Callable[..., Any])


class SocketServer:
    """A Socket.IO server, independent of transports and of the reactor global.

    ``io.use``, ``io.on``, ``io.on_connect``... act on the main namespace ``/``;
    :meth:`of` declares or returns another.  Unknown namespaces are refused
    with "Invalid namespace".  Transports hand new connections to
    :meth:`open_session`.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, settings: Settings | None = None) -> None:
        self.clock = clock
        self.settings = settings or Settings()
        self.wheel = TimerWheel(clock, self.settings.timer_resolution)
        self.namespaces: dict[str, Namespace] = {}
        self.connections: dict[str, Connection] = {}
        #: Packets of sessions that ended (live ones are counted on each session).
        self.closed_packets_in = 0
        self.closed_packets_out = 0
        self.main = self.of("/")

    def of(self, name: str) -> Namespace:
        """The namespace ``name`` (declared on first use)."""
        if not name.startswith("/"):
            raise ValueError(f"a namespace name starts with '/': {name!r}")
        nsp = self.namespaces.get(name)
        if nsp is None:
            nsp = self.namespaces[name] = Namespace(self, name)
        return nsp

    # -- the main namespace, for brevity -------------------------------------

    def use(self, middleware: Middleware) -> Middleware:
        return self.main.use(middleware)

    def on(self, event: str, handler: H | None = None) -> Any:
        return self.main.on(event, handler)

    def on_any(self, handler: H) -> H:
        return self.main.on_any(handler)

    def on_connect(self, handler: H) -> H:
        return self.main.on_connect(handler)

    def on_disconnect(self, handler: H) -> H:
        return self.main.on_disconnect(handler)

    def to(self, *rooms: str) -> BroadcastOperator:
        return self.main.to(*rooms)

    def emit(self, event: str, *args: Any) -> int:
        return self.main.emit(event, *args)

    # -- connections ---------------------------------------------------------

    def open_session(self, transport: Transport, handshake: Handshake) -> EngineSession:
        """Start an Engine.IO session on a freshly opened transport."""
        settings = self.settings
        sid = new_id()
        session = EngineSession(
            sid, transport, self.wheel, settings.ping_interval, settings.ping_timeout
        )
        connection = Connection(self, session, handshake)
        self.connections[sid] = connection
        session.open(
            OpenHandshake(
                sid=sid,
                upgrades=(),
                ping_interval_ms=round(settings.ping_interval * 1000),
                ping_timeout_ms=round(settings.ping_timeout * 1000),
                max_payload=settings.max_payload,
            ),
            connection,
        )
        return session

    def connection_closed(self, connection: Connection) -> None:
        self.connections.pop(connection.session.sid, None)
        self.closed_packets_in += connection.session.packets_in
        self.closed_packets_out += connection.session.packets_out

    def packet_totals(self) -> tuple[int, int]:
        """Packets received and messages sent since start, on every connection."""
        sessions = [c.session for c in self.connections.values()]
        return (
            self.closed_packets_in + sum(s.packets_in for s in sessions),
            self.closed_packets_out + sum(s.packets_out for s in sessions),
        )

    def close_all(self, reason: str) -> None:
        """Close every connection (their clients may reconnect elsewhere)."""
        for connection in list(self.connections.values()):
            connection.close(reason)
