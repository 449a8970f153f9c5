"""Engine.IO's verdicts on a WebSocket handshake request, with their HTTP answers.

engine.io refuses a bad request with an HTTP status and a JSON body
``{"code": N, "message": "..."}``; clients and load balancers rely on both.
"""

from __future__ import annotations

import json

from autobahn.twisted.websocket import ConnectionDeny

__all__ = ["SLOW_CONSUMER", "HandshakeDenied", "check_request"]

#: Why a session ended when its client did not read what we sent.
SLOW_CONSUMER = "slow consumer"

# Engine.IO error codes, as engine.io answers them.
UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5


class HandshakeDenied(ConnectionDeny):
    """A refused handshake: HTTP ``status`` with ``{"code": code, "message": message}``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.eio_code = code
        self.message = message

    def response(self) -> bytes:
        """The whole HTTP answer, JSON body included."""
        body = json.dumps({"code": self.eio_code, "message": self.message}, separators=(",", ":"))
        retry = "Retry-After: 1\r\n" if self.status in (429, 503) else ""
        return (
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{retry}Connection: close\r\n\r\n{body}"
        ).encode()


def check_request(path: str, params: dict[str, list[str]], expected_path: str) -> None:
    """Validate an Engine.IO handshake request for the WebSocket transport.

    :raises HandshakeDenied: with engine.io's status, code and message.
    """
    if path.rstrip("/") != expected_path.rstrip("/"):
        raise HandshakeDenied(404, BAD_REQUEST, "Not found")
    transport = params.get("transport", [None])[0]
    if transport != "websocket":
        raise HandshakeDenied(400, UNKNOWN_TRANSPORT, "Transport unknown")
    if params.get("EIO", [None])[0] != "4":
        raise HandshakeDenied(400, UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
    if "sid" in params:
        # An upgrade of an HTTP long-polling session, which this server does not open.
        raise HandshakeDenied(400, UNKNOWN_SID, "Session ID unknown")


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
