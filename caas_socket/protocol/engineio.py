"""Engine.IO v4 packets.

Over WebSocket one frame is one packet: a text frame starts with the packet
type digit, a binary frame is a raw binary message.  The HTTP long-polling
payload form (packets joined by the record separator, binary as ``b`` +
base64) is here too, so a polling transport can be added without a new codec.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import attrs

from . import jsonwire
from .errors import DecodeError

__all__ = [
    "CLOSE",
    "MESSAGE",
    "NOOP",
    "OPEN",
    "PING",
    "PONG",
    "UPGRADE",
    "OpenHandshake",
    "decode_payload",
    "decode_text",
    "encode_payload",
]

OPEN: Final = "0"
CLOSE: Final = "1"
PING: Final = "2"
PONG: Final = "3"
MESSAGE: Final = "4"
UPGRADE: Final = "5"
NOOP: Final = "6"
_TYPES: Final = frozenset("0123456")
RECORD_SEPARATOR: Final = "\x1e"


@attrs.frozen
class OpenHandshake:
    """The data of the ``open`` packet the server sends first."""

    sid: str
    upgrades: tuple[str, ...]
    ping_interval_ms: int
    ping_timeout_ms: int
    max_payload: int

    def encode(self) -> str:
        """``0{...}`` with exactly the keys, and the key order, of engine.io."""
        return OPEN + jsonwire.dumps(
            {
                "sid": self.sid,
                "upgrades": list(self.upgrades),
                "pingInterval": self.ping_interval_ms,
                "pingTimeout": self.ping_timeout_ms,
                "maxPayload": self.max_payload,
            }
        )


def decode_text(frame: str) -> tuple[str, str]:
    """Split a text packet into its type digit and its data."""
    if not frame or frame[0] not in _TYPES:
        raise DecodeError(f"unknown Engine.IO packet type {frame[:1]!r}")
    return frame[0], frame[1:]


def encode_payload(packets: list[str | bytes]) -> str:
    """Join packets for one HTTP long-polling response body."""
    return RECORD_SEPARATOR.join(
        p if isinstance(p, str) else "b" + base64.b64encode(p).decode("ascii") for p in packets
    )


def decode_payload(payload: str) -> list[str | bytes]:
    """Split an HTTP long-polling request body into text packets and binary messages."""
    packets: list[str | bytes] = []
    for record in payload.split(RECORD_SEPARATOR):
        if record.startswith("b"):
            try:
                packets.append(base64.b64decode(record[1:], validate=True))
            except (binascii.Error, ValueError) as e:  # ValueError: non-ASCII
                raise DecodeError(f"invalid base64 binary packet: {e}") from None
        else:
            decode_text(record)
            packets.append(record)
    return packets
