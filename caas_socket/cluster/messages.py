"""The cluster bus message format, version 1.

Nodes publish to each other's channel (``{prefix}server:{serverId}``).  One
message is one Redis PUBLISH payload::

    caas/1 <header JSON>\\n<body>

The header is a compact JSON object whose ``"t"`` names the type; the body is
opaque bytes whose meaning depends on the type.  Other languages can produce
these messages with a JSON library and string concatenation; see
``docs/BUS.rst``.

``emit``
    ``{"t":"emit","nsp":"/","rooms":[...]|null,"except":[...],"bin":[base64...]}``;
    the body is the Engine.IO text frame to deliver (``4`` + the Socket.IO
    packet), already encoded once by the sender, and ``bin`` its binary
    attachments, if any.  The receiving node delivers it to its local sockets of
    namespace ``nsp`` in any of ``rooms`` (all its sockets when ``null``) except
    those in ``except``.
``close``
    ``{"t":"close","sid":...,"reason":...,"reconnect":false}``: end that socket.
    ``reconnect: false`` sends ``caas:kicked`` and a DISCONNECT (the client stays
    away); ``true`` closes the transport (the client reconnects).
``probe``
    ``{"t":"probe","from":serverId,"nonce":...}``: a node publishes one to itself
    to prove its subscription works.

Several messages may travel in one PUBLISH, in a batch envelope:
``caas/1* `` followed, for each message, by its length in bytes (decimal), a
newline, and the message itself.
``idle``
    ``{"t":"idle","entry":{registry entry},"before":ms}``: the registry says this
    connection of the receiving node had no activity since ``before``; the
    owner closes it if its own, fresher view agrees, and removes the entry if
    the connection no longer exists.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs

from ..registry.interfaces import Entry

__all__ = [
    "BATCH",
    "BusDecodeError",
    "Close",
    "Emit",
    "Idle",
    "Message",
    "Probe",
    "decode",
    "decode_many",
    "encode",
]

MAGIC = b"caas/1 "
BATCH = b"caas/1* "
_MAX_BATCH = 10_000


class BusDecodeError(ValueError):
    """A bus message that is not version 1 or is malformed."""


@attrs.frozen
class Emit:
    """Deliver ``frame`` (and its binary ``attachments``) to local sockets."""

    nsp: str
    rooms: tuple[str, ...] | None
    except_rooms: tuple[str, ...]
    frame: bytes
    attachments: tuple[bytes, ...] = ()

    @property
    def frames(self) -> list[bytes]:
        return [self.frame, *self.attachments]


@attrs.frozen
class Close:
    """End one socket of the receiving node."""

    socket_id: str
    reason: str
    reconnect: bool = False


@attrs.frozen
class Probe:
    """A node checking that its own subscription delivers."""

    sender: str
    nonce: str


@attrs.frozen
class Idle:
    """A stale registry entry, reported to the node that owns it."""

    entry: Entry
    before: int


Message = Emit | Close | Probe | Idle


def _header(message: Message) -> tuple[dict[str, Any], bytes]:
    if isinstance(message, Emit):
        header: dict[str, Any] = {
            "t": "emit",
            "nsp": message.nsp,
            "rooms": None if message.rooms is None else list(message.rooms),
            "except": list(message.except_rooms),
        }
        if message.attachments:
            header["bin"] = [base64.b64encode(a).decode("ascii") for a in message.attachments]
        return header, message.frame
    if isinstance(message, Close):
        return {
            "t": "close",
            "sid": message.socket_id,
            "reason": message.reason,
            "reconnect": message.reconnect,
        }, b""
    if isinstance(message, Idle):
        return {
            "t": "idle",
            "entry": json.loads(message.entry.to_json()),
            "before": message.before,
        }, b""
    return {"t": "probe", "from": message.sender, "nonce": message.nonce}, b""


def encode(message: Message) -> bytes:
    """The PUBLISH payload of ``message``."""
    header, body = _header(message)
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BusDecodeError(f"{what} must be a list of strings")
    return tuple(value)


def decode_many(data: bytes) -> list[Message]:
    """The messages of one PUBLISH payload: a single one, or those of a batch."""
    if not data.startswith(BATCH):
        return [decode(data)]
    found: list[Message] = []
    view, at = memoryview(data), len(BATCH)
    while at < len(data):
        newline = data.find(b"\n", at, at + 12)
        length = data[at:newline]
        if newline < 0 or not length.isdigit() or len(found) >= _MAX_BATCH:
            raise BusDecodeError("malformed batch envelope")
        start = newline + 1
        end = start + int(length)
        if end > len(data):
            raise BusDecodeError("truncated batch")
        found.append(decode(bytes(view[start:end])))
        at = end
    return found


def decode(data: bytes) -> Message:
    """Parse a PUBLISH payload; :class:`BusDecodeError` for anything else."""
    if not data.startswith(MAGIC):
        raise BusDecodeError("not a caas/1 message")
    head, newline, body = data[len(MAGIC) :].partition(b"\n")
    if not newline:
        raise BusDecodeError("missing header line")
    try:
        header = json.loads(head)
        kind = header["t"]
        if kind == "emit":
            rooms = header["rooms"]
            return Emit(
                nsp=str(header["nsp"]),
                rooms=None if rooms is None else _strings(rooms, "rooms"),
                except_rooms=_strings(header.get("except", []), "except"),
                frame=body,
                attachments=tuple(
                    base64.b64decode(a, validate=True) for a in header.get("bin", ())
                ),
            )
        if kind == "close":
            return Close(str(header["sid"]), str(header["reason"]), bool(header["reconnect"]))
        if kind == "probe":
            return Probe(str(header["from"]), str(header["nonce"]))
        if kind == "idle":
            before = header["before"]
            if not isinstance(before, int):
                raise BusDecodeError("before must be an integer")
            return Idle(Entry.from_json(json.dumps(header["entry"])), before)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as e:
        raise BusDecodeError(f"malformed message: {e}") from None
    raise BusDecodeError(f"unknown message type {kind!r}")
