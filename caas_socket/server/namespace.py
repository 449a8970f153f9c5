"""Namespaces: middlewares, event handlers and broadcasts of the application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..protocol import socketio
from .adapter import Adapter
from .errors import ConnectionRefused
from .frames import encode_frames
from .socket import Socket, SocketState

if TYPE_CHECKING:
    from .server import SocketServer

__all__ = ["BroadcastOperator", "Middleware", "Namespace"]

#: ``middleware(socket)``: return (or await) to let the CONNECT through, raise
#: :class:`ConnectionRefused` to refuse it.
Middleware = Callable[[Socket], Awaitable[None] | None]
H = TypeVar("H", bound=Callable[..., Any])

_INTERNAL_ERROR = ConnectionRefused("Internal server error", {"code": "internal_error"})


class Namespace:
    """A Socket.IO namespace: its middlewares, handlers, sockets and rooms.

    Handlers may be plain functions or coroutines (or return Deferreds).  An
    event handler's return value answers the client's ack: a tuple spreads into
    several arguments, ``None`` acks with none.
    """

    log = Logger()

    def __init__(self, server: SocketServer, name: str) -> None:
        self.server = server
        self.name = name
        #: Engine.IO message + Socket.IO EVENT + namespace: what every plain event starts with.
        self.event_prefix = "42" if name == "/" else f"42{name},"
        self.sockets: dict[str, Socket] = {}
        self.adapter = Adapter(self.sockets, server.settings.max_rooms_per_socket)
        self._middlewares: list[Middleware] = []
        self._handlers: dict[Any, Callable[..., Any]] = {}
        self._catch_all: Callable[..., Any] | None = None
        self._connect_handlers: list[Callable[[Socket], Any]] = []
        self._disconnect_handlers: list[Callable[[Socket, str], Any]] = []

    def __repr__(self) -> str:
        return f"<Namespace {self.name} ({len(self.sockets)} sockets)>"

    # -- declaring -----------------------------------------------------------

    def use(self, middleware: Middleware) -> Middleware:
        """Run ``middleware(socket)`` on every CONNECT, in the order added."""
        self._middlewares.append(middleware)
        return middleware

    def on(self, event: str, handler: H | None = None) -> Any:
        """Handle ``event`` with ``handler(socket, *args)``; usable as a decorator."""
        if handler is None:
            return partial(self.on, event)
        self._handlers[event] = handler
        return handler

    def on_any(self, handler: H) -> H:
        """Handle events that have no handler of their own: ``handler(socket, event, *args)``."""
        self._catch_all = handler
        return handler

    def on_connect(self, handler: H) -> H:
        """Call ``handler(socket)`` once a socket is connected (after its CONNECT ack)."""
        self._connect_handlers.append(handler)
        return handler

    def on_disconnect(self, handler: H) -> H:
        """Call ``handler(socket, reason)`` when a connected socket ends."""
        self._disconnect_handlers.append(handler)
        return handler

    # -- broadcasting --------------------------------------------------------

    def to(self, *rooms: str) -> BroadcastOperator:
        """Address the sockets in any of ``rooms`` (a socket id is a room too)."""
        return BroadcastOperator(self, frozenset(rooms), frozenset())

    def except_(self, *rooms: str) -> BroadcastOperator:
        """Address every socket except those in ``rooms``."""
        return BroadcastOperator(self, None, frozenset(rooms))

    def emit(self, event: str, *args: Any) -> int:
        """Send to every socket of the namespace; returns the local recipients."""
        return BroadcastOperator(self, None, frozenset()).emit(event, *args)

    # -- connecting ----------------------------------------------------------

    def connect(self, socket: Socket) -> None:
        """Run the middlewares for a CONNECT, then accept or refuse."""
        self._continue(socket, 0)

    def _continue(self, socket: Socket, start: int) -> None:
        middlewares = self._middlewares
        for index in range(start, len(middlewares)):
            if socket.state is SocketState.DISCONNECTED:
                return
            try:
                result = middlewares[index](socket)
            except ConnectionRefused as refusal:
                self._refuse(socket, refusal)
                return
            except Exception:
                self.log.failure("middleware failed for socket {socket_id}", socket_id=socket.id)
                self._refuse(socket, _INTERNAL_ERROR)
                return
            if isawaitable(result):
                ensureDeferred(result).addCallbacks(  # type: ignore[arg-type]
                    lambda _, i=index: self._continue(socket, i + 1),
                    lambda f: self._middleware_failed(socket, f),
                )
                return
        if socket.state is not SocketState.DISCONNECTED:
            self._accept(socket)

    def _middleware_failed(self, socket: Socket, failure: Failure) -> None:
        if socket.state is SocketState.DISCONNECTED:
            return
        if failure.check(ConnectionRefused):
            self._refuse(socket, failure.value)
            return
        self.log.failure("middleware failed for socket {socket_id}", failure, socket_id=socket.id)
        self._refuse(socket, _INTERNAL_ERROR)

    def _refuse(self, socket: Socket, refusal: ConnectionRefused) -> None:
        packet = socketio.Packet(socketio.CONNECT_ERROR, self.name, refusal.payload())
        socket.connection.session.send(encode_frames(packet))
        code = (refusal.data or {}).get("code", "-")
        socket._close(f"refused: {refusal.message} ({code})")

    def _accept(self, socket: Socket) -> None:
        socket.state = SocketState.CONNECTED
        socket.connected_at = self.server.clock.seconds()
        self.sockets[socket.id] = socket
        socket.connection.accepted(socket)
        packet = socketio.Packet(socketio.CONNECT, self.name, {"sid": socket.id})
        socket.connection.session.send(encode_frames(packet))
        socket.log_transition(previous=SocketState.AUTHENTICATING)
        for handler in self._connect_handlers:
            self._call(socket, handler, (), None, "connect")

    # -- dispatching ---------------------------------------------------------

    def dispatch(self, socket: Socket, data: list[Any], ack_id: int | None) -> None:
        """Hand an event to its handler (or to the catch-all)."""
        event = data[0]
        handler = self._handlers.get(event)
        if handler is not None:
            self._call(socket, handler, data[1:], ack_id, event)
        elif self._catch_all is not None:
            self._call(socket, self._catch_all, data, ack_id, event)

    def _call(
        self,
        socket: Socket,
        handler: Callable[..., Any],
        args: Iterable[Any],
        ack_id: int | None,
        event: Any,
    ) -> None:
        try:
            result = handler(socket, *args)
            if result is None:
                if ack_id is not None:
                    socket._send_ack(ack_id, None)
                return
        except Exception:
            self.log.failure(
                "handler of {sio_event!r} failed for socket {socket_id}",
                sio_event=event,
                socket_id=socket.id,
            )
            return
        if isawaitable(result):
            ensureDeferred(result).addCallbacks(  # type: ignore[arg-type]
                lambda r: socket._send_ack(ack_id, r) if ack_id is not None else None,
                lambda f: self.log.failure(
                    "handler of {sio_event!r} failed for socket {socket_id}",
                    f,
                    sio_event=event,
                    socket_id=socket.id,
                ),
            )
        elif ack_id is not None:
            socket._send_ack(ack_id, result)

    def run_disconnect_handlers(self, socket: Socket, reason: str) -> None:
        for handler in self._disconnect_handlers:
            self._call(socket, handler, (reason,), None, "disconnect")


class BroadcastOperator:
    """An addressed broadcast: ``nsp.to("room").except_("other").emit(...)``."""

    __slots__ = ("_except", "_nsp", "_rooms")

    def __init__(
        self, nsp: Namespace, rooms: frozenset[str] | None, except_rooms: frozenset[str]
    ) -> None:
        self._nsp = nsp
        self._rooms = rooms
        self._except = except_rooms

    def to(self, *rooms: str) -> BroadcastOperator:
        return BroadcastOperator(self._nsp, (self._rooms or frozenset()) | set(rooms), self._except)

    def except_(self, *rooms: str) -> BroadcastOperator:
        return BroadcastOperator(self._nsp, self._rooms, self._except | set(rooms))

    def emit(self, event: str, *args: Any) -> int:
        """Encode once and deliver; returns the number of local recipients."""
        packet = socketio.Packet(socketio.EVENT, self._nsp.name, [event, *args])
        return self._nsp.adapter.broadcast(packet, self._rooms, self._except)
