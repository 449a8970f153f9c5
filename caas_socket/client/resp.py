"""RESP2, the Redis wire format: requests out, replies in, nothing else.

The blocking :class:`~caas_socket.client.blocking.CommandClient` needs four
commands (AUTH, SELECT, PING, PUBLISH) and must not add a dependency, so it
speaks the protocol itself.  This module is pure (bytes in, values out) so it
can be tested alone, with property-based round trips.

Replies map to Python values as hiredis maps them: a bulk string is ``bytes``,
a simple string ``str``, an integer ``int``, a null ``None``, an array a
``list`` and an error reply a :class:`RespError` *value* (returned, not
raised, so one bad reply in an array does not hide the others; the caller
decides).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["INCOMPLETE", "ProtocolError", "ReplyReader", "RespError", "encode_request"]

#: Redis refuses bulk strings above 512 MB; anything larger is garbage, not a reply.
MAX_BULK: Final = 512 * 1024 * 1024
#: Nested arrays deeper than this are garbage too (Redis replies nest a few levels).
MAX_DEPTH: Final = 32
#: A header line longer than this is not RESP (integers fit in 21 characters).
_MAX_LINE: Final = 64 * 1024


class RespError(Exception):
    """An error reply (``-ERR ...``, ``-WRONGPASS ...``): Redis refused one command."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        """The first word, by which Redis classifies errors (``ERR``, ``NOAUTH``, ...)."""
        return self.message.split(" ", 1)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RespError) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)


class ProtocolError(ValueError):
    """Bytes that are not RESP2: the connection is unusable from here on."""


class _Incomplete(Exception):
    """Internal: the buffer ends inside a reply."""


class _IncompleteMarker:
    def __repr__(self) -> str:
        return "INCOMPLETE"


#: What :meth:`ReplyReader.next_reply` returns while a reply has not fully arrived.
INCOMPLETE: Final = _IncompleteMarker()


def _arg(value: bytes | bytearray | memoryview | str | int | float) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a Redis argument is bytes, str, int or float, not {type(value).__name__}")
    return repr(value).encode("ascii")


def encode_request(*args: bytes | bytearray | memoryview | str | int | float) -> bytes:
    """One command as an array of bulk strings, the only form Redis must accept."""
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = _arg(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class ReplyReader:
    """Incremental parser: :meth:`feed` bytes as they arrive, take complete replies out.

    Parsing restarts from the beginning of a reply when more bytes arrive, which
    is quadratic only for one huge reply split into many reads; the replies this
    client reads are a few bytes long.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a reply."""
        return len(self._buffer)

    def next_reply(self) -> Any:
        """The next complete reply, or :data:`INCOMPLETE`.

        :raises ProtocolError: on bytes that are not RESP2.
        """
        self._pos = 0
        try:
            reply = self._read(0)
        except _Incomplete:
            return INCOMPLETE
        del self._buffer[: self._pos]
        return reply

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n", self._pos)
        if end < 0:
            if len(self._buffer) - self._pos > _MAX_LINE:
                raise ProtocolError("a header line without its CRLF")
            raise _Incomplete
        line = bytes(self._buffer[self._pos : end])
        self._pos = end + 2
        return line

    def _int(self, text: bytes) -> int:
        body = text[1:] if text[:1] == b"-" else text
        if not body.isdigit() or len(body) > 20:
            raise ProtocolError(f"not an integer: {text[:32]!r}")
        return int(text)

    def _read(self, depth: int) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "surrogateescape")
        if kind == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return self._int(rest)
        if kind == b"$":
            size = self._int(rest)
            if size == -1:
                return None
            if not 0 <= size <= MAX_BULK:
                raise ProtocolError(f"bad bulk length {size}")
            end = self._pos + size
            if len(self._buffer) < end + 2:
                raise _Incomplete
            if self._buffer[end : end + 2] != b"\r\n":
                raise ProtocolError("a bulk string without its CRLF")
            value = bytes(self._buffer[self._pos : end])
            self._pos = end + 2
            return value
        if kind == b"*":
            size = self._int(rest)
            if size == -1:
                return None
            if size < 0:
                raise ProtocolError(f"bad array length {size}")
            if depth >= MAX_DEPTH:
                raise ProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
            return [self._read(depth + 1) for _ in range(size)]
        raise ProtocolError(f"unknown reply type {line[:32]!r}")
