"""Socket.IO v5 packets, as the default socket.io-parser writes them.

Text form: ``<type>[<attachments>-][<nsp>,][<ack id>][<JSON payload>]``; a packet
with binary data sends its JSON with ``{"_placeholder":true,"num":N}`` in place
of each buffer, followed by one binary message per buffer.  The validation
rules are the ones the reference parser applies, plus the spec's "the payload
is mandatory" for events and acks.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from . import jsonwire
from .errors import DecodeError

__all__ = [
    "ACK",
    "BINARY_ACK",
    "BINARY_EVENT",
    "CONNECT",
    "CONNECT_ERROR",
    "DISCONNECT",
    "EVENT",
    "RESERVED_EVENTS",
    "Decoder",
    "Packet",
    "encode",
    "event_data",
    "has_binary",
]

CONNECT: Final = 0
DISCONNECT: Final = 1
EVENT: Final = 2
ACK: Final = 3
CONNECT_ERROR: Final = 4
BINARY_EVENT: Final = 5
BINARY_ACK: Final = 6

#: Event names a peer may not send: socket.io uses them for its own signals.
RESERVED_EVENTS: Final = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
#: Ack ids beyond this lose precision in JavaScript numbers.
MAX_ACK_ID: Final = 2**53 - 1
_MAX_ACK_DIGITS: Final = 16
_BINARY_TYPES: Final = (bytes, bytearray, memoryview)


class Packet(NamedTuple):
    """One Socket.IO packet; ``data`` holds ``bytes`` where buffers were attached."""

    type: int
    nsp: str = "/"
    data: Any = None
    id: int | None = None


def has_binary(value: Any) -> bool:
    """Whether ``value`` holds a buffer anywhere, which makes a packet binary."""
    if isinstance(value, _BINARY_TYPES):
        return True
    if isinstance(value, list | tuple):
        return any(has_binary(v) for v in value)
    if isinstance(value, dict):
        return any(has_binary(v) for v in value.values())
    return False


def _deconstruct(value: Any, buffers: list[bytes]) -> Any:
    if isinstance(value, _BINARY_TYPES):
        buffers.append(bytes(value))
        return {"_placeholder": True, "num": len(buffers) - 1}
    if isinstance(value, list | tuple):
        return [_deconstruct(v, buffers) for v in value]
    if isinstance(value, dict):
        return {k: _deconstruct(v, buffers) for k, v in value.items()}
    return value


def _head(ptype: int, nsp: str, ack_id: int | None, attachments: int | None) -> str:
    text = str(ptype) if attachments is None else f"{ptype}{attachments}-"
    if nsp != "/":
        text += nsp + ","
    if ack_id is not None:
        text += str(ack_id)
    return text


def encode(packet: Packet) -> list[str | bytes]:
    """The frames of ``packet``: its text, then one ``bytes`` per attachment.

    An EVENT or ACK whose data holds buffers is sent as BINARY_EVENT/BINARY_ACK,
    as socket.io does.  The JSON encoder itself finds the buffers (it cannot
    encode them), so plain data is never walked twice.
    """
    ptype, nsp, data, ack_id = packet
    if ptype != BINARY_EVENT and ptype != BINARY_ACK:
        if data is None:
            return [_head(ptype, nsp, ack_id, None)]
        try:
            return [_head(ptype, nsp, ack_id, None) + jsonwire.dumps(data)]
        except TypeError:
            if (ptype != EVENT and ptype != ACK) or not has_binary(data):
                raise
            ptype += 3
    buffers: list[bytes] = []
    data = _deconstruct(data, buffers)
    return [_head(ptype, nsp, ack_id, len(buffers)) + jsonwire.dumps(data), *buffers]


def _reassembled(value: Any, buffers: list[bytes]) -> Any:
    """The data with its placeholders replaced; absurd nesting is a decode error."""
    try:
        return _reconstruct(value, buffers)
    except RecursionError:
        raise DecodeError("binary packet nested too deeply") from None


def _reconstruct(value: Any, buffers: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_reconstruct(v, buffers) for v in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True:
            num = value.get("num")
            if type(num) is int and 0 <= num < len(buffers):
                return buffers[num]
            raise DecodeError("illegal attachments: bad placeholder")
        return {k: _reconstruct(v, buffers) for k, v in value.items()}
    return value


def _check_payload(ptype: int, data: Any, present: bool, ack_id: int | None) -> None:
    """The reference parser's rules; ``present`` tells JSON ``null`` from no payload."""
    if ptype == EVENT or ptype == BINARY_EVENT:
        if not isinstance(data, list) or not data:
            raise DecodeError("invalid payload: an event needs a non-empty array")
        name = data[0]
        if isinstance(name, str):
            if name in RESERVED_EVENTS:
                raise DecodeError(f"invalid payload: reserved event name {name!r}")
        elif isinstance(name, bool) or not isinstance(name, int | float):
            raise DecodeError("invalid payload: event name must be a string or a number")
    elif ptype == ACK or ptype == BINARY_ACK:
        if not isinstance(data, list):
            raise DecodeError("invalid payload: an ack needs an array")
        if ack_id is None:
            raise DecodeError("invalid payload: an ack needs an id")
    elif ptype == CONNECT:
        if present and not isinstance(data, dict):
            raise DecodeError("invalid payload: CONNECT data must be an object")
    elif ptype == DISCONNECT:
        if present:
            raise DecodeError("invalid payload: DISCONNECT carries no data")
    elif not isinstance(data, str | dict):  # CONNECT_ERROR
        raise DecodeError("invalid payload: CONNECT_ERROR data must be a string or an object")


def event_data(text: str) -> list[Any]:
    """The data of ``2[...]``, an EVENT of the main namespace without ack id.

    The same rules as :class:`Decoder`, on the one packet shape nearly every
    message has.
    """
    data = jsonwire.loads(text[1:])
    _check_payload(EVENT, data, True, None)
    return data  # type: ignore[no-any-return]


def _parse(text: str, max_attachments: int) -> tuple[Packet, int]:
    """Parse the text part of a packet; returns it and its attachment count."""
    n = len(text)
    if not n or text[0] not in "0123456":
        raise DecodeError(f"unknown Socket.IO packet type {text[:1]!r}")
    ptype = ord(text[0]) - 48
    i = 1
    attachments = 0
    if ptype == BINARY_EVENT or ptype == BINARY_ACK:
        dash = text.find("-", 1, 9)
        count = text[1:dash]
        if dash < 0 or not count.isascii() or not count.isdigit():
            raise DecodeError("illegal attachments: missing or bad count")
        attachments = int(count)
        if attachments > max_attachments:
            raise DecodeError(f"too many attachments: {attachments} > {max_attachments}")
        i = dash + 1
    nsp = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        if comma < 0:
            nsp, i = text[i:], n
        else:
            nsp, i = text[i:comma], comma + 1
    ack_id = None
    j = i
    while j < n and "0" <= text[j] <= "9":
        j += 1
    if j > i:
        if j - i > _MAX_ACK_DIGITS or (ack_id := int(text[i:j])) > MAX_ACK_ID:
            raise DecodeError("invalid ack id: too large")
        i = j
    present = i < n
    data = jsonwire.loads(text[i:]) if present else None
    _check_payload(ptype, data, present, ack_id)
    return Packet(ptype, nsp, data, ack_id), attachments


class Decoder:
    """Decodes the messages of one connection, reassembling binary packets.

    A binary packet's text announces N attachments; the next N messages must be
    binary, and text in between is an error, as is binary out of the blue.
    """

    __slots__ = ("_buffers", "_expected", "_pending", "max_attachments")

    def __init__(self, max_attachments: int = 64) -> None:
        self.max_attachments = max_attachments
        self._pending: Packet | None = None
        self._buffers: list[bytes] = []
        self._expected = 0

    @property
    def awaiting_binary(self) -> bool:
        """Whether attachments of a binary packet are still to come."""
        return self._pending is not None

    def decode_text(self, text: str) -> Packet | None:
        """Decode a text message; ``None`` while the packet awaits its attachments."""
        if self._pending is not None:
            raise DecodeError("text message while binary attachments were expected")
        packet, attachments = _parse(text, self.max_attachments)
        if packet.type != BINARY_EVENT and packet.type != BINARY_ACK:
            return packet
        if attachments == 0:
            return packet._replace(data=_reassembled(packet.data, []))
        self._pending, self._expected, self._buffers = packet, attachments, []
        return None

    def decode_binary(self, data: bytes) -> Packet | None:
        """Take one attachment; returns the packet once all have arrived."""
        pending = self._pending
        if pending is None:
            raise DecodeError("binary message without a binary packet")
        self._buffers.append(data)
        if len(self._buffers) < self._expected:
            return None
        buffers, self._pending, self._buffers = self._buffers, None, []
        return pending._replace(data=_reassembled(pending.data, buffers))
