"""Engine.IO over WebSocket, on Autobahn: thin glue between frames and a session.

The protocol validates the handshake request the way engine.io does (path,
``EIO=4``, ``transport=websocket``), answers refusals with a JSON body, and
then only moves frames between Autobahn and an
:class:`~caas_socket.engine.session.EngineSession`.  WebSocket-level
violations (frames over ``max_payload``, invalid UTF-8, bad framing) are failed
by Autobahn with the proper close code and end only that connection.
"""

from __future__ import annotations

import struct
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionRequest
from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.logger import Logger

from ..engine.session import EngineSession
from ..server.server import SocketServer
from ..server.settings import Handshake
from .handshake import (
    BAD_REQUEST,
    FORBIDDEN,
    SLOW_CONSUMER,
    HandshakeDenied,
    check_request,
)
from .ratelimit import ConnectRateLimiter

__all__ = ["EngineWebSocketFactory", "EngineWebSocketProtocol"]

_OPEN = 3  # autobahn WebSocketProtocol.STATE_OPEN
_CONNECTING = 1  # autobahn WebSocketProtocol.STATE_CONNECTING
#: Bytes a handshake request (line and headers) may take.
MAX_HANDSHAKE = 16 * 1024


class EngineWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying one Engine.IO session.

    Our events go to ``caas_log``: ``log`` is Autobahn's own (txaio) logger, whose
    per-frame debug messages its level setting silences.
    """

    caas_log = Logger()
    factory: EngineWebSocketFactory

    _handshake: Handshake | None = None
    _denied: HandshakeDenied | None = None
    _socket: Any = None
    _overflowed = False
    session: EngineSession | None = None

    # -- handshake -------------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> None:
        try:
            check_request(request.path, request.params, self.factory.socket_server.settings.path)
            if not self.factory.accepting:
                raise HandshakeDenied(503, FORBIDDEN, "Server is shutting down")
            address = self._client_address()
            limiter = self.factory.limiter
            if limiter is not None and not limiter.allow(address):
                raise HandshakeDenied(429, FORBIDDEN, "Too many connections from your address")
        except HandshakeDenied as denied:
            self._denied = denied
            raise
        self._handshake = Handshake(
            query={k: v[0] for k, v in request.params.items() if v},
            headers=dict(request.headers),
            address=address,
            secure=ISSLTransport.providedBy(self.transport),
            url=self.http_request_uri,
            issued=int(time.time() * 1000),
        )

    def _client_address(self) -> str:
        """The client's address: the TCP peer, or the one trusted proxies forwarded.

        With ``trusted_proxies`` set, Autobahn has put the right entry of
        X-Forwarded-For in ``self.peer``; otherwise it is the TCP peer.
        """
        if self.trustXForwardedFor and "x-forwarded-for" in (self.http_headers or {}):
            return str(self.peer)
        peer = self.transport.getPeer()
        return str(getattr(peer, "host", peer))

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        """Refuse the request with a JSON body, the way engine.io does."""
        denied = self._denied or self._explain(reason, code)
        self.wasNotCleanReason = reason
        # A flood refused by the rate limit is counted there, not logged line by line.
        if denied.status != 429:
            self.caas_log.info(
                "refused handshake from {peer}: {status} {reason}",
                peer=self.peer,
                status=denied.status,
                reason=reason,
                event="handshake_refused",
            )
        self.sendData(denied.response())
        self.dropConnection(abort=False)

    def _explain(self, reason: str, status: int) -> HandshakeDenied:
        """Turn a refusal of Autobahn's own checks into engine.io's answer.

        Autobahn checks the HTTP request (method, Upgrade header...) before our
        :meth:`onConnect`; when the path and query were parsed, the engine.io
        verdict about them comes first (a plain HTTP GET on the path is a bad
        transport or a bad request, not "426 Upgrade Required").
        """
        path = getattr(self, "http_request_path", None)
        params = getattr(self, "http_request_params", None)
        if path is None:
            # Refused before Autobahn parsed the URI (e.g. a POST): parse it here.
            words = str(getattr(self, "http_status_line", "") or "").split()
            if len(words) == 3:
                target = urlsplit(words[1])
                path, params = target.path, parse_qs(target.query)
        if path is not None and params is not None:
            try:
                check_request(path, params, self.factory.socket_server.settings.path)
            except HandshakeDenied as denied:
                return denied
        return HandshakeDenied(400 if status < 500 else status, BAD_REQUEST, "Bad request")

    def _header_overflows(self, data: bytes) -> bool:
        """Whether the request header, still unparsed, would pass :data:`MAX_HANDSHAKE`."""
        return (
            getattr(self, "http_request_data", None) is None
            and len(self.data) + len(data) > MAX_HANDSHAKE
            and b"\r\n\r\n" not in self.data + data
        )

    def onOpen(self) -> None:
        handshake, self._handshake = self._handshake, None
        assert handshake is not None
        # The request is no longer needed; do not keep it for the connection's life.
        self.http_request_data = self.http_headers = None
        if isinstance(self.transport, tcp.Connection):
            self._socket = self.transport.socket  # plain TCP: see _write
        self.session = self.factory.socket_server.open_session(self, handshake)

    # -- frames in -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Read complete, unfragmented data frames directly; leave the rest to Autobahn.

        Nearly every frame a client sends is one masked text or binary frame.
        Those are unmasked and handed to the session here, without Autobahn's
        per-frame state machine, futures and debug formatting.  Anything else
        (control frames, fragments, a frame cut across reads, oversize or
        invalid UTF-8, any protocol violation) goes, from its first byte, to
        Autobahn, which handles or fails it exactly as before.
        """
        session = self.session
        if (
            session is None
            or self.state != _OPEN
            or self.current_frame is not None
            or self.inside_message
            or self.data
        ):
            if self.state == _CONNECTING and self._header_overflows(data):
                # Autobahn buffers a request until its header ends, however long.
                self._denied = HandshakeDenied(431, BAD_REQUEST, "Request header too large")
                self.data = b""
                self.failHandshake("request header too large", 431)
                return
            self._dataReceived(data)
            return
        end = len(data)
        limit = self.maxMessagePayloadSize
        i = 0
        while end - i >= 6:
            head, second = data[i], data[i + 1]
            opcode = head & 0x0F
            # FIN set, no RSV bits, text or binary, masked (as clients must).
            if head & 0xF0 != 0x80 or (opcode != 1 and opcode != 2) or not second & 0x80:
                break
            length = second & 0x7F
            start = i + 6
            if length == 126:
                start += 2
                length = int.from_bytes(data[i + 2 : i + 4], "big")
            elif length == 127:
                break
            if (limit and length > limit) or end - start < length:
                break
            payload = _unmask(data[start : start + length], data[start - 4 : start])
            if opcode == 1:
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    break
                i = start + length
                session.receive_text(text)
            else:
                i = start + length
                session.receive_binary(payload)
            if self.state != _OPEN:
                return
        if i < end:
            self._dataReceived(data[i:])

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        if isBinary:
            session.receive_binary(payload)
        else:
            session.receive_text(payload.decode("utf-8"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self.session = self.session, None  # no cycle left for the GC
        self._socket = None
        if session is None or session.closed:
            return
        if self._overflowed:
            session.transport_closed(SLOW_CONSUMER)
            return
        local = self.localCloseCode
        if local is not None and local != 1000:
            # Autobahn failed the connection: oversized frame, invalid UTF-8, bad framing.
            self.caas_log.info(
                "session {sid} failed by the WebSocket layer: {detail}",
                sid=session.sid,
                detail=self.wasNotCleanReason or f"close code {local}",
                event="websocket_error",
            )
            session.transport_closed("transport error")
        else:
            session.transport_closed("transport close")

    # -- Transport (frames out) ------------------------------------------------

    def send_text(self, data: bytes) -> None:
        if self.state == _OPEN:
            self._send_frame(0x81, data)

    def send_binary(self, data: bytes) -> None:
        if self.state == _OPEN:
            self._send_frame(0x82, data)

    def _send_frame(self, first_byte: int, payload: bytes) -> None:
        """Write one unfragmented, unmasked frame.

        Autobahn's ``sendMessage`` would apply ``max_payload`` (a limit on what
        clients send) to what we send as well, and costs more per frame.
        Compression is never negotiated, so frames are written as they are.
        """
        n = len(payload)
        if n < 126:
            self._write(bytes((first_byte, n)) + payload)
        elif n < 65536:
            self._write(struct.pack("!BBH", first_byte, 126, n) + payload)
        else:
            self._write(struct.pack("!BBQ", first_byte, 127, n) + payload)

    def _write(self, data: bytes) -> None:
        """Send at once when nothing is queued, else queue behind what is.

        Twisted's ``write`` always buffers, registers the socket for writing and
        sends on a later turn: two ``epoll_ctl`` calls and a loop turn for each
        small message.  When its buffer is empty, a direct ``send`` keeps the
        order and skips all that; whatever the kernel does not take (or an
        error) goes to ``transport.write`` as before.
        """
        if self._overflowed:
            return
        transport = self.transport
        sock = self._socket
        if (
            sock is not None
            and not transport._tempDataBuffer
            and len(transport.dataBuffer) == transport.offset
            and not transport.disconnecting
        ):
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # Twisted's own write reports the error and closes
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)
        limit = self.factory.max_outbound_buffer
        if limit and self.buffered() > limit:
            self._overflow()

    def _overflow(self) -> None:
        """The client stopped reading: drop it before its backlog eats the memory."""
        self._overflowed = True
        dropped = self.buffered()
        self.factory.slow_consumers += 1
        self.factory.dropped_bytes += dropped
        self.caas_log.info(
            "session {sid}: client does not read; {dropped} bytes queued, dropping it",
            sid=self.session.sid if self.session is not None else "-",
            dropped=dropped,
            event="slow_consumer",
        )
        self.transport.abortConnection()

    def close(self) -> None:
        if self.state == _OPEN:
            self.sendClose(1000)
        else:
            self.dropConnection(abort=True)

    def buffered(self) -> int:
        transport = self.transport
        if not hasattr(transport, "dataBuffer"):
            transport = getattr(transport, "transport", transport)  # TLS wraps TCP
        buffer = getattr(transport, "dataBuffer", b"")
        return len(buffer) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def _accept_deflate(offers: list[Any]) -> Any:
    """Accept permessage-deflate, bounded: small windows, no context kept by the client.

    Inflated messages stay bounded by ``max_payload`` (Autobahn stops inflating
    there); what this adds per connection is one inflater of 2**10-byte window.
    We send uncompressed frames, which the extension allows.
    """
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.accept_max_window_bits:
            return PerMessageDeflateOfferAccept(
                offer, request_no_context_takeover=True, request_max_window_bits=10
            )
    return None


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``mask``, in C-speed big-integer ops."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n + 3) // 4))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class EngineWebSocketFactory(WebSocketServerFactory):
    """Builds one :class:`EngineWebSocketProtocol` per accepted connection.

    ``accepting`` turns to ``False`` when the node drains: new handshakes are
    then refused with 503 so the load balancer sends clients elsewhere.
    """

    protocol = EngineWebSocketProtocol

    def __init__(
        self,
        socket_server: SocketServer,
        reactor: IReactorTime,
        *,
        open_handshake_timeout: float = 10.0,
        trusted_proxies: int = 0,
        max_outbound_buffer: int = 1024 * 1024,
        limiter: ConnectRateLimiter | None = None,
        compression: bool = False,
    ) -> None:
        super().__init__(server="caas-socket", reactor=reactor)
        self.noisy = False
        self.socket_server = socket_server
        self.accepting = True
        #: Bytes a client may leave unread before it is dropped (0: no limit).
        self.max_outbound_buffer = max_outbound_buffer
        self.limiter = limiter
        self.slow_consumers = 0
        self.dropped_bytes = 0
        max_payload = socket_server.settings.max_payload
        self.setProtocolOptions(
            maxMessagePayloadSize=max_payload,
            maxFramePayloadSize=max_payload,
            autoFragmentSize=0,
            openHandshakeTimeout=open_handshake_timeout,
            closeHandshakeTimeout=1,
            failByDrop=False,
            echoCloseCodeReason=False,
            requireMaskedClientFrames=True,
            tcpNoDelay=True,
            webStatus=False,
            perMessageCompressionAccept=_accept_deflate if compression else None,
            trustXForwardedFor=trusted_proxies,
        )
        # Autobahn copies some 40 options from the factory onto every new
        # protocol instance (and pretty-prints them for a debug line). Give
        # them to a class of this factory's own instead: one copy, not one per
        # connection, and nothing formatted per connection.
        options = {
            # a function stored on a class would turn into a method: keep it plain
            name: staticmethod(value) if callable(value) else value
            for name in EngineWebSocketProtocol.CONFIG_ATTRS
            for value in [getattr(self, name)]
        }
        self.protocol = type(
            EngineWebSocketProtocol.__name__,
            (EngineWebSocketProtocol,),
            {**options, "CONFIG_ATTRS": ()},
        )
