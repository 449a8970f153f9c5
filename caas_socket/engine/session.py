"""An Engine.IO v4 session, independent of the transport carrying it.

The session owns what Engine.IO owns: the open packet, the heartbeat (the
server pings every ``ping_interval``; no pong within ``ping_timeout`` closes the
session) and the packet types.  A transport (today WebSocket; HTTP
long-polling could be added) only moves frames: it calls :meth:`receive_text`,
:meth:`receive_binary` and :meth:`transport_closed`, and implements
:class:`Transport`.  What the messages mean is the business of the
:class:`MessageSink` above, the Socket.IO connection.
"""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

from ..protocol import engineio
from ..protocol.errors import DecodeError
from ..timers import Timer, TimerWheel

__all__ = ["EngineSession", "MessageSink", "Transport"]

_PING_FRAME = engineio.PING.encode()


class Transport(Protocol):
    """What a session needs from the thing that moves its frames."""

    def send_text(self, data: bytes) -> None:
        """Send one text frame, already UTF-8 encoded."""

    def send_binary(self, data: bytes) -> None:
        """Send one binary frame."""

    def close(self) -> None:
        """Close in an orderly way (the peer sees a normal close)."""

    def buffered(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        ...


class MessageSink(Protocol):
    """The layer above: receives messages and learns about the end of the session."""

    def on_message(self, text: str) -> None: ...

    def on_binary(self, data: bytes) -> None: ...

    def on_close(self, reason: str) -> None: ...


class EngineSession:
    """One Engine.IO session.

    ``packets_in`` counts every packet received and ``packets_out`` every
    message sent: activity tracking and metrics sample them instead of doing
    work per packet.
    """

    __slots__ = (
        "_ping_interval",
        "_ping_timeout",
        "_timer",
        "_transport",
        "_wheel",
        "close_reason",
        "closed",
        "dropped_bytes",
        "messages_in",
        "packets_in",
        "packets_out",
        "sid",
        "sink",
    )

    log = Logger()

    def __init__(
        self,
        sid: str,
        transport: Transport,
        wheel: TimerWheel,
        ping_interval: float,
        ping_timeout: float,
    ) -> None:
        self.sid = sid
        self._transport = transport
        self._wheel = wheel
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._timer: Timer | None = None
        self.sink: MessageSink | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.packets_in = 0
        self.packets_out = 0
        #: Messages (not heartbeats) received: what counts as client activity.
        self.messages_in = 0
        #: Outbound bytes still unsent when the session ended.
        self.dropped_bytes = 0

    def open(self, handshake: engineio.OpenHandshake, sink: MessageSink) -> None:
        """Send the open packet, start the heartbeat and deliver to ``sink``."""
        self.sink = sink
        self._transport.send_text(handshake.encode().encode())
        self._schedule_ping()

    # -- heartbeat -----------------------------------------------------------

    def _schedule_ping(self) -> None:
        self._timer = self._wheel.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        if self.closed:
            return
        self._transport.send_text(_PING_FRAME)
        self._timer = self._wheel.call_later(self._ping_timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self.close("ping timeout")

    def _pong(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._schedule_ping()

    # -- input ---------------------------------------------------------------

    def receive_text(self, frame: str) -> None:
        """A text frame arrived."""
        if self.closed:
            return
        self.packets_in += 1
        # The hot path first: messages.
        if frame[:1] == engineio.MESSAGE:
            self.messages_in += 1
            if self.sink is not None:
                self.sink.on_message(frame[1:])
            return
        try:
            kind, _ = engineio.decode_text(frame)
        except DecodeError as e:
            self.log.info("session {sid}: {error}", sid=self.sid, error=str(e))
            self.close("parse error")
            return
        if kind == engineio.PONG:
            self._pong()
        elif kind == engineio.CLOSE:
            self.close("transport close")
        elif kind != engineio.NOOP:
            # open/upgrade make no sense on an open session; a ping from the
            # client is the heartbeat of protocol v3, not ours.
            self.log.info("session {sid}: unexpected packet type {kind}", sid=self.sid, kind=kind)
            self.close("parse error")

    def receive_binary(self, data: bytes) -> None:
        """A binary frame arrived: in Engine.IO v4 it is a whole binary message."""
        if self.closed:
            return
        self.packets_in += 1
        self.messages_in += 1
        if self.sink is not None:
            self.sink.on_binary(data)

    def transport_closed(self, reason: str) -> None:
        """The transport is gone (``"transport close"`` or ``"transport error"``)."""
        self._end(reason)

    # -- output --------------------------------------------------------------

    def send(self, frames: list[bytes]) -> None:
        """Send one encoded message: a text frame, then its binary attachments.

        ``frames[0]`` already carries the Engine.IO message prefix; see
        :func:`caas_socket.server.frames.encode_frames`.
        """
        if self.closed:
            return
        self.packets_out += 1
        transport = self._transport
        transport.send_text(frames[0])
        for attachment in frames[1:]:
            transport.send_binary(attachment)

    def buffered(self) -> int:
        """Outbound bytes not yet accepted by the kernel."""
        return 0 if self.closed else self._transport.buffered()

    def close(self, reason: str) -> None:
        """End the session from this side and close the transport."""
        if self.closed:
            return
        self._end(reason)
        self._transport.close()

    def _end(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.dropped_bytes = self._transport.buffered()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_close(reason)
