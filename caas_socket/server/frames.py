"""Socket.IO packets as Engine.IO frames, ready for any number of recipients.

Encoding once per message (not per recipient) is what makes a broadcast cheap:
the JSON is written and UTF-8 encoded a single time.
"""

from __future__ import annotations

from ..protocol import socketio
from ..protocol.engineio import MESSAGE

__all__ = ["encode_frames"]


def encode_frames(packet: socketio.Packet) -> list[bytes]:
    """``[text frame, *binary attachments]`` of ``packet``.

    A lone surrogate (only possible in text that came from JSON ``\\udXXX``
    escapes) is written back as the same escape, as ``JSON.stringify`` does,
    instead of producing invalid UTF-8.
    """
    parts = socketio.encode(packet)
    text = (MESSAGE + parts[0]).encode("utf-8", "backslashreplace")
    if len(parts) == 1:
        return [text]
    return [text, *parts[1:]]  # type: ignore[list-item]
