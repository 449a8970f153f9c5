"""Test doubles for unit tests of the protocol logic (no sockets, no reactor)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock

from caas_socket.engine.session import EngineSession
from caas_socket.server import Handshake, Settings, SocketServer


class RecordingTransport:
    """An Engine.IO transport that records frames instead of sending them."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []
        self.closed = False
        self.session: EngineSession | None = None

    def send_text(self, data: bytes) -> None:
        assert not self.closed, "sent a frame after close"
        self.frames.append(data.decode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        assert not self.closed, "sent a frame after close"
        self.frames.append(bytes(data))

    def close(self) -> None:
        self.closed = True
        if self.session is not None:
            self.session.transport_closed("transport close")

    def buffered(self) -> int:
        return 0

    def take(self) -> list[str | bytes]:
        """Frames sent since the last call."""
        frames, self.frames = self.frames, []
        return frames

    # -- client side helpers ---------------------------------------------------

    def receive(self, *frames: str | bytes) -> None:
        """Frames from the client."""
        assert self.session is not None
        for frame in frames:
            if isinstance(frame, str):
                self.session.receive_text(frame)
            else:
                self.session.receive_binary(frame)


def handshake(query: dict[str, str] | None = None, address: str = "127.0.0.1") -> Handshake:
    return Handshake(
        query=query or {}, headers={}, address=address, secure=False, url="/socket.io/", issued=0
    )


def open_client(
    server: SocketServer, query: dict[str, str] | None = None
) -> tuple[RecordingTransport, dict[str, Any]]:
    """Open an Engine.IO session on ``server``; returns the transport and the open data."""
    transport = RecordingTransport()
    transport.session = server.open_session(transport, handshake(query))
    (open_frame,) = transport.take()
    assert isinstance(open_frame, str) and open_frame.startswith("0")
    return transport, json.loads(open_frame[1:])


def new_server(clock: Clock | None = None, **settings: Any) -> tuple[SocketServer, Clock]:
    clock = clock or Clock()
    return SocketServer(clock, Settings(**settings)), clock
