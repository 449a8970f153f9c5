"""A client's presence in one namespace: what application code talks to."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.logger import Logger

from ..protocol import jsonwire, socketio
from ..timers import Timer
from .errors import AckError
from .frames import encode_frames
from .settings import Handshake

if TYPE_CHECKING:
    from .connection import Connection
    from .namespace import Namespace

__all__ = ["Socket", "SocketState", "new_id"]


def new_id() -> str:
    """A 20-character URL-safe random id, like socket.io's."""
    return secrets.token_urlsafe(15)


class SocketState(enum.Enum):
    """Life of a socket; every transition is one log event."""

    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


def ack_args(result: Any) -> list[Any]:
    """A handler's return value as ack arguments: a tuple spreads, ``None`` is none."""
    if result is None:
        return []
    if isinstance(result, tuple):
        return list(result)
    return [result]


class Socket:
    """One client connected (or connecting) to one namespace.

    ``data`` is free for the application; ``tags`` (e.g. user, tenant, device)
    are added to every lifecycle log event of this socket.
    """

    __slots__ = (
        "_acks",
        "_cleanups",
        "_next_ack",
        "connected_at",
        "connection",
        "data",
        "disconnect_reason",
        "handshake",
        "id",
        "nsp",
        "rooms",
        "state",
        "tags",
    )

    log = Logger()

    def __init__(self, nsp: Namespace, connection: Connection, handshake: Handshake) -> None:
        self.id = new_id()
        self.nsp = nsp
        self.connection = connection
        self.handshake = handshake
        self.data: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.rooms: set[str] = set()
        self.state = SocketState.AUTHENTICATING
        self.disconnect_reason: str | None = None
        #: Clock time of the CONNECT ack, ``None`` before.
        self.connected_at: float | None = None
        self._acks: dict[int, tuple[Deferred[list[Any]], Timer | None]] | None = None
        self._next_ack = 0
        self._cleanups: list[Callable[[], object]] | None = None

    def __repr__(self) -> str:
        return f"<Socket {self.id} {self.nsp.name} {self.state.value}>"

    @property
    def connected(self) -> bool:
        return self.state is SocketState.CONNECTED

    @property
    def disconnected(self) -> bool:
        return self.state is SocketState.DISCONNECTED

    # -- sending -------------------------------------------------------------

    def send_frames(self, frames: list[bytes]) -> bool:
        """Send an encoded message; ``False`` when the socket is not connected."""
        if self.state is not SocketState.CONNECTED:
            return False
        self.connection.session.send(frames)
        return True

    def emit(self, event: str, *args: Any) -> bool:
        """Send event ``event`` with ``args``; ``False`` when not connected."""
        if self.state is not SocketState.CONNECTED:
            return False
        try:
            # The common case, plain JSON: straight to the frame text.
            text = self.nsp.event_prefix + jsonwire.dumps([event, *args])
        except TypeError:  # buffers among the arguments: a binary event
            packet = socketio.Packet(socketio.EVENT, self.nsp.name, [event, *args])
            self.connection.session.send(encode_frames(packet))
        else:
            self.connection.session.send([text.encode("utf-8", "backslashreplace")])
        return True

    def call(self, event: str, *args: Any, timeout: float | None = None) -> Deferred[list[Any]]:
        """Emit with an acknowledgement; fires with the client's ack arguments.

        Fails with :class:`AckError` on timeout, on disconnect, or when more than
        ``max_pending_acks`` are already awaited.
        """
        if self.state is not SocketState.CONNECTED:
            return fail(AckError("socket is not connected"))
        acks = self._acks
        if acks is None:
            acks = self._acks = {}
        if len(acks) >= self.nsp.server.settings.max_pending_acks:
            return fail(AckError("too many acknowledgements pending"))
        ack_id = self._next_ack
        self._next_ack += 1
        result: Deferred[list[Any]] = Deferred()
        timer = None
        if timeout is not None:
            timer = self.nsp.server.wheel.call_later(timeout, self._ack_timed_out, ack_id)
        acks[ack_id] = (result, timer)
        packet = socketio.Packet(socketio.EVENT, self.nsp.name, [event, *args], ack_id)
        self.connection.session.send(encode_frames(packet))
        return result

    def _ack_timed_out(self, ack_id: int) -> None:
        entry = self._acks.pop(ack_id, None) if self._acks else None
        if entry is not None:
            entry[0].errback(AckError("acknowledgement timed out"))

    def _send_ack(self, ack_id: int, result: Any) -> None:
        if self.state is SocketState.CONNECTED:
            packet = socketio.Packet(socketio.ACK, self.nsp.name, ack_args(result), ack_id)
            self.connection.session.send(encode_frames(packet))

    # -- receiving -----------------------------------------------------------

    def on_packet(self, packet: socketio.Packet) -> None:
        """A packet for this namespace arrived from the client."""
        ptype = packet.type
        if ptype == socketio.EVENT or ptype == socketio.BINARY_EVENT:
            if self.state is SocketState.CONNECTED:
                self.nsp.dispatch(self, packet.data, packet.id)
        elif ptype == socketio.ACK or ptype == socketio.BINARY_ACK:
            entry = self._acks.pop(packet.id, None) if self._acks else None
            if entry is not None:
                if entry[1] is not None:
                    entry[1].cancel()
                entry[0].callback(packet.data)
        elif ptype == socketio.DISCONNECT:
            self._close("client namespace disconnect")

    # -- rooms ---------------------------------------------------------------

    def join(self, *rooms: str) -> None:
        """Join ``rooms`` (bounded by ``max_rooms_per_socket``)."""
        if self.state is SocketState.DISCONNECTED:
            return
        for room in rooms:
            self.nsp.adapter.join(self, room)

    def leave(self, *rooms: str) -> None:
        for room in rooms:
            self.nsp.adapter.leave(self, room)

    # -- ending --------------------------------------------------------------

    def add_cleanup(self, cleanup: Callable[[], object]) -> None:
        """Run ``cleanup`` once when this socket ends, however it ends.

        Middlewares that acquire something (a registry entry) register its
        release here; on a socket that already ended it runs at once, so a
        client that left while its authentication was running leaves nothing.
        Cleanups run newest first; one that fails is logged, the others still run.
        """
        if self.state is SocketState.DISCONNECTED:
            _run_cleanup(self, cleanup)
            return
        if self._cleanups is None:
            self._cleanups = []
        self._cleanups.append(cleanup)

    def disconnect(self) -> None:
        """Leave the namespace with a DISCONNECT: socket.io-client will not reconnect."""
        if self.state is SocketState.DISCONNECTED:
            return
        if self.state is SocketState.CONNECTED:
            packet = socketio.Packet(socketio.DISCONNECT, self.nsp.name)
            self.connection.session.send(encode_frames(packet))
        self._close("server namespace disconnect")

    def close_connection(self, reason: str = "forced close") -> None:
        """Close the whole connection: socket.io-client reconnects (to any node)."""
        self.connection.close(reason)

    def _close(self, reason: str) -> None:
        """End this socket: cleanups, rooms, handlers, pending acks, in that order."""
        if self.state is SocketState.DISCONNECTED:
            return
        was_connected = self.state is SocketState.CONNECTED
        self.state = SocketState.DISCONNECTED
        self.disconnect_reason = reason
        cleanups, self._cleanups = self._cleanups, None
        for cleanup in reversed(cleanups or ()):
            _run_cleanup(self, cleanup)
        self.nsp.adapter.leave_all(self)
        self.nsp.sockets.pop(self.id, None)
        self.connection.forget(self)
        if was_connected:
            self.nsp.run_disconnect_handlers(self, reason)
        acks, self._acks = self._acks, None
        for result, timer in (acks or {}).values():
            if timer is not None:
                timer.cancel()
            result.errback(AckError(f"socket disconnected: {reason}"))
        previous = SocketState.CONNECTED if was_connected else SocketState.AUTHENTICATING
        self.log_transition(reason, previous)

    def log_transition(
        self, reason: str | None = None, previous: SocketState | None = None
    ) -> None:
        """One structured event per state change.

        Fields: ``state``, ``previous`` (the state left), ``reason``,
        ``duration`` (seconds connected) and ``unsent_bytes`` (outbound data
        dropped with the connection), on disconnect, and the socket's tags.
        """
        duration = unsent = None
        if self.state is SocketState.DISCONNECTED and self.connected_at is not None:
            duration = round(self.nsp.server.clock.seconds() - self.connected_at, 3)
            unsent = self.connection.session.dropped_bytes
        self.log.info(
            "socket {socket_id} {state} on {nsp} ({reason})",
            socket_id=self.id,
            state=self.state.value,
            previous=previous.value if previous is not None else None,
            nsp=self.nsp.name,
            reason=reason or "-",
            duration=duration,
            unsent_bytes=unsent,
            event="socket_state",
            **self.tags,
        )


def _run_cleanup(socket: Socket, cleanup: Callable[[], object]) -> None:
    try:
        result = cleanup()
        if isawaitable(result):
            ensureDeferred(result).addErrback(  # type: ignore[arg-type]
                lambda f: Socket.log.failure(
                    "cleanup of socket {socket_id} failed", f, socket_id=socket.id
                )
            )
    except Exception:
        Socket.log.failure("cleanup of socket {socket_id} failed", socket_id=socket.id)
