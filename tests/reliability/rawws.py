"""A raw WebSocket client on a blocking socket: our own handshake, frames and Engine.IO.

The official client cannot misbehave on purpose; this one can.  It sends any
frame (bad opcodes, reserved bits, unmasked, oversized, fragments), any
handshake (never finished, with an extension offer, from another loopback
address), and can stop reading altogether with a tiny receive buffer, as a
client on a stalled network would::

    with RawWebSocket(node.host, node.port).open() as ws:
        ws.engine_open()                       # the "0{...}" packet
        ws.connect_namespace({"token": t})    # "40{...}", answered "40{sid}" or "44{...}"
        ws.send_text('42["heartbeat"]')
        opcode, payload = ws.recv_frame()

Everything is bounded by the socket timeout; nothing touches a reactor, so
tests call it from a thread (``deferToThread``) or directly when the reactor
has nothing else to do meanwhile.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any, Self

__all__ = [
    "ENGINE_PATH",
    "Closed",
    "HttpAnswer",
    "RawWebSocket",
    "frame",
    "mask_payload",
]

ENGINE_PATH = "/socket.io/?EIO=4&transport=websocket"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(ConnectionError):
    """The server closed the connection; ``code`` is the WebSocket close code, if one came."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeated 4-byte mask, as big-integer operations (fast for 1 MB)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n + 3) // 4))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame(
    payload: bytes,
    opcode: int = TEXT,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame; every field may be wrong on purpose.

    :param rsv: the three reserved bits (0..7), set only by a negotiated extension.
    :param length: the length to announce instead of the real one.
    """
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + mask_payload(payload, mask)


class HttpAnswer:
    """A refused (or accepted) handshake: status, lower-cased headers, body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HttpAnswer {self.status} {self.headers} {self.body[:200]!r}>"


class RawWebSocket:
    """One client connection; see the module docstring.

    :param source: local address to connect from (``127.0.0.2`` is loopback too).
    :param rcvbuf: ``SO_RCVBUF`` set before connecting, so the TCP window stays that small.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        path: str = ENGINE_PATH,
        source: str | None = None,
        rcvbuf: int | None = None,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.source, self.rcvbuf, self.timeout = source, rcvbuf, timeout
        self.extra_headers = dict(headers or {})
        self.sock: socket.socket | None = None
        self._buffer = b""
        self.answer: HttpAnswer | None = None
        #: Engine.IO open data (``sid``, ``pingInterval``, ``maxPayload``...).
        self.engine: dict[str, Any] | None = None
        #: Text frames read while waiting for something else.
        self.backlog: list[str] = []

    # -- connecting --------------------------------------------------------------

    def connect_tcp(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        if self.source is not None:
            sock.bind((self.source, 0))
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock
        return self

    def request_bytes(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in self.extra_headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def open(self, *, expect: int | None = 101) -> Self:
        """TCP connect and WebSocket handshake; :attr:`answer` holds the HTTP answer.

        :param expect: the status to insist on (``None``: any).
        """
        if self.sock is None:
            self.connect_tcp()
        self.send_raw(self.request_bytes())
        self.answer = self._read_http()
        if expect is not None and self.answer.status != expect:
            raise AssertionError(f"expected HTTP {expect}, got {self.answer}")
        return self

    def _read_http(self) -> HttpAnswer:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if status != 101:
            size = int(headers.get("content-length", "0"))
            self._buffer = rest
            while len(self._buffer) < size:
                self._fill()
            body, self._buffer = self._buffer[:size], self._buffer[size:]
        else:
            self._buffer = rest
        return HttpAnswer(status, headers, body)

    # -- raw I/O -----------------------------------------------------------------

    def _fill(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError as e:
            raise Closed(f"connection reset: {e}") from None
        if not data:
            raise Closed("the server closed the connection")
        self._buffer += data

    def send_raw(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def send_frame(self, payload: bytes, opcode: int = TEXT, **kwargs: Any) -> None:
        self.send_raw(frame(payload, opcode, **kwargs))

    def send_text(self, text: str) -> None:
        self.send_frame(text.encode(), TEXT)

    def recv_frame(self) -> tuple[int, bytes]:
        """The next whole frame from the server.

        :raises Closed: at a close frame (with its code) or at end of stream.
        """
        while True:
            parsed = self._parse()
            if parsed is not None:
                opcode, payload = parsed
                if opcode == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    raise Closed(f"close frame {code} {payload[2:]!r}", code)
                return opcode, payload
            self._fill()

    def _parse(self) -> tuple[int, bytes] | None:
        data = self._buffer
        if len(data) < 2:
            return None
        opcode, n, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if n == 126:
            if len(data) < 4:
                return None
            n, at = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            if len(data) < 10:
                return None
            n, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + n:
            return None
        self._buffer = data[at + n :]
        return opcode, data[at : at + n]

    def recv_text(self) -> str:
        """The next text frame, answering the server's Engine.IO pings on the way."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode != TEXT:
                continue
            text = payload.decode()
            if text == "2":
                self.send_text("3")
                continue
            return text

    def wait_closed(self, timeout: float) -> int | None:
        """Read (and drop) everything until the server closes; returns the close code.

        :raises TimeoutError: if it is still open after ``timeout``.
        """
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"still open after {timeout}s")
            self.sock.settimeout(left)
            try:
                self.recv_frame()
            except Closed as e:
                return e.code
            except TimeoutError:
                raise TimeoutError(f"still open after {timeout}s") from None
            finally:
                self.sock.settimeout(self.timeout)

    def is_open(self, wait: float = 0.0) -> bool:
        """Whether the connection is still up (pending frames are dropped)."""
        try:
            self.wait_closed(wait if wait > 0 else 0.001)
        except TimeoutError:
            return True
        except OSError:
            return False
        return False

    # -- Engine.IO and Socket.IO -------------------------------------------------

    def engine_open(self) -> dict[str, Any]:
        text = self.recv_text()
        assert text.startswith("0"), text
        self.engine = json.loads(text[1:])
        return self.engine

    def connect_namespace(self, auth: Any = None, nsp: str = "/") -> tuple[str, Any]:
        """Send CONNECT and return the answer: ``("connect", {"sid"})`` or ``("error", {...})``."""
        head = "40" if nsp == "/" else f"40{nsp},"
        self.send_text(head + ("" if auth is None else json.dumps(auth)))
        while True:
            text = self.recv_text()
            for kind, start in (("connect", "40"), ("error", "44")):
                expected = start if nsp == "/" else f"{start}{nsp},"
                if text.startswith(expected):
                    rest = text[len(expected) :]
                    return kind, json.loads(rest) if rest else None
            self.backlog.append(text)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def abort(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): no FIN, no close frame."""
        if self.sock is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
