"""One client connection and its namespace sockets (socket.io's ``Client``).

It sits on an Engine.IO session, decodes Socket.IO packets, routes them to the
socket of their namespace, and closes connections that have no namespace
connected for too long (never sent CONNECT, or left the last one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from ..engine.session import EngineSession
from ..protocol import socketio
from ..protocol.errors import DecodeError
from ..timers import Timer
from .frames import encode_frames
from .settings import Handshake
from .socket import Socket

if TYPE_CHECKING:
    from .server import SocketServer

__all__ = ["Connection"]

_INVALID_NAMESPACE = {"message": "Invalid namespace"}


class Connection:
    """The Socket.IO side of one Engine.IO session."""

    __slots__ = ("_decoder", "_timer", "closed", "handshake", "server", "session", "sockets")

    log = Logger()

    def __init__(self, server: SocketServer, session: EngineSession, handshake: Handshake) -> None:
        self.server = server
        self.session = session
        self.handshake = handshake
        self.sockets: dict[str, Socket] = {}
        self.closed = False
        self._decoder = socketio.Decoder(server.settings.max_attachments)
        self._timer: Timer | None = server.wheel.call_later(
            server.settings.connect_timeout, self._connect_timed_out
        )

    # -- MessageSink -----------------------------------------------------------

    def on_message(self, text: str) -> None:
        try:
            if text[:2] == "2[" and not self._decoder.awaiting_binary:
                # The common case first: an event without ack on the main namespace.
                data = socketio.event_data(text)
                socket = self.sockets.get("/")
                if socket is not None and socket.connected:
                    socket.nsp.dispatch(socket, data, None)
                return
            packet = self._decoder.decode_text(text)
        except DecodeError as e:
            self._parse_error(e)
            return
        if packet is not None:
            self._route(packet)

    def on_binary(self, data: bytes) -> None:
        try:
            packet = self._decoder.decode_binary(data)
        except DecodeError as e:
            self._parse_error(e)
            return
        if packet is not None:
            self._route(packet)

    def on_close(self, reason: str) -> None:
        self.closed = True
        self._cancel_timer()
        for socket in list(self.sockets.values()):
            socket._close(reason)
        self.server.connection_closed(self)

    # -- routing -------------------------------------------------------------

    def _parse_error(self, error: DecodeError) -> None:
        self.log.info(
            "connection {sid} sent a malformed packet: {error}",
            sid=self.session.sid,
            error=str(error),
        )
        self.session.close("parse error")

    def _route(self, packet: socketio.Packet) -> None:
        if packet.type == socketio.CONNECT:
            self._connect(packet)
            return
        socket = self.sockets.get(packet.nsp)
        if socket is not None:
            socket.on_packet(packet)

    def _connect(self, packet: socketio.Packet) -> None:
        nsp = self.server.namespaces.get(packet.nsp)
        if nsp is None:
            error = socketio.Packet(socketio.CONNECT_ERROR, packet.nsp, _INVALID_NAMESPACE)
            self.session.send(encode_frames(error))
            return
        if packet.nsp in self.sockets:
            self.log.debug("connection {sid}: duplicate CONNECT ignored", sid=self.session.sid)
            return
        handshake = self.handshake.with_auth(packet.data or {})
        socket = Socket(nsp, self, handshake)
        self.sockets[packet.nsp] = socket
        socket.log_transition()
        nsp.connect(socket)

    # -- namespace bookkeeping -----------------------------------------------

    def accepted(self, socket: Socket) -> None:
        """A namespace CONNECT succeeded: the connect deadline no longer applies."""
        self._cancel_timer()

    def forget(self, socket: Socket) -> None:
        """A socket ended; with no namespace left, the connect deadline applies again."""
        if self.sockets.get(socket.nsp.name) is socket:
            del self.sockets[socket.nsp.name]
        if not self.sockets and not self.closed and self._timer is None:
            self._timer = self.server.wheel.call_later(
                self.server.settings.connect_timeout, self._connect_timed_out
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _connect_timed_out(self) -> None:
        self._timer = None
        if not any(s.connected for s in self.sockets.values()):
            self.close("connect timeout")

    def close(self, reason: str) -> None:
        """Close the whole connection (the client may reconnect)."""
        self.session.close(reason)
