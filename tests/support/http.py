"""A response body reader for twisted.web.client.Agent in tests.

``readBody`` warns about the transports Agent hands it; this collects the
body itself and fails with the reason when the response is cut short.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

__all__ = ["BodyCollector"]


class BodyCollector(Protocol):
    """``response.deliverBody(collector)``, then ``await collector.done``."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)
