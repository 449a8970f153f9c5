"""Listening on Twisted endpoint strings, failing loudly when a bind fails.

Twisted's ``StreamServerEndpointService`` only logs a failed bind and keeps
running a node that serves nothing; a server that cannot listen must not start.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ListenError", "Listener"]


class ListenError(Exception):
    """A listener could not bind its endpoint."""


def describe(port: IListeningPort) -> str:
    """``host:port`` (or the path) of a listening port, for logs and tests."""
    host = port.getHost()
    if hasattr(host, "port"):
        return f"{host.host}:{host.port}"
    return str(getattr(host, "name", host))


#: Endpoint types whose listen queue can be set, and the depth we give it.
_BACKLOG_TYPES = ("tcp:", "tcp6:", "ssl:", "unix:")
BACKLOG = 1024


def with_backlog(description: str) -> str:
    """``description`` with a deep listen queue unless it sets one.

    Twisted listens with a backlog of 50: a burst of connects (a node restart
    sends thousands) overflows it and the kernel drops SYNs, which clients
    retry only after a second.
    """
    if description.startswith(_BACKLOG_TYPES) and "backlog=" not in description:
        return f"{description}:backlog={BACKLOG}"
    return description


class Listener(Service):
    """Listens on one endpoint string with ``factory`` while running."""

    log = Logger()

    def __init__(self, reactor: Any, description: str, factory: Factory, label: str) -> None:
        self._reactor = reactor
        self.description = description
        self._factory = factory
        self._label = label
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        """Bind before privileges are dropped; a synchronous failure aborts the start."""
        super().privilegedStartService()
        endpoint = serverFromString(self._reactor, with_backlog(self.description))
        self._listening = endpoint.listen(self._factory)
        outcome: list[Any] = []
        self._listening.addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            raise ListenError(
                f"{self._label}: cannot listen on {self.description!r}: "
                f"{outcome[0].getErrorMessage()}"
            )
        if outcome:
            self._bound(outcome[0])
        else:
            self._listening.addCallback(self._bound)

    def _bound(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.log.info(
            "{label} listening on {address}",
            label=self._label,
            address=describe(port),
            endpoint=self.description,
            event="listening",
        )
        return port

    def startService(self) -> None:
        if self._listening is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        self._listening = None
        if port is None:
            return Deferred.fromCoroutine(_nothing())
        return maybeDeferred(port.stopListening)


async def _nothing() -> None:
    return None
