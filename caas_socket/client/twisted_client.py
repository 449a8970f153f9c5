"""A command client for Twisted programs, on the package's bounded Redis pool.

It rides on :class:`~caas_socket.redis_connection.RedisConnection`, so it
takes the same URLs as the nodes (TLS, Sentinel), reconnects by itself, and
bounds every call by a timeout on the clock it was given.  Methods return
Deferreds, usable with ``await`` and with callbacks alike.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from caas_socket.app.commands import Command
from caas_socket.redis_connection import RedisConnection, RedisURL, connect

from .base import CommandSender

__all__ = ["TwistedCommandClient"]


class TwistedCommandClient(CommandSender["Deferred[int]"]):
    """Publishes commands to every node from Twisted code.

    ::

        caas = await TwistedCommandClient.connect("redis://redis:6379/0", reactor)
        received = await caas.disconnect("acme", "alice", reason="banned")
        await caas.close()

    Commands of one client reach every node in the order they were sent as
    long as its connection pool has one connection (:meth:`connect` opens one);
    with a larger pool, two commands in flight may overtake each other.

    :param redis: a connection (pool) of :mod:`caas_socket.redis_connection`.
    :param clock: bounds each PUBLISH (default: the connection's reactor).
    :param timeout: that bound in seconds (default: the connection's).
    :param owned: whether :meth:`close` closes ``redis`` too.
    """

    def __init__(
        self,
        redis: RedisConnection,
        *,
        prefix: str = "caas:",
        clock: IReactorTime | None = None,
        timeout: float | None = None,
        owned: bool = False,
    ) -> None:
        super().__init__(prefix)
        self.redis = redis
        self._clock = clock
        self._timeout = timeout
        self._owned = owned

    @classmethod
    def connect(
        cls, url: str | RedisURL, reactor: Any, *, prefix: str = "caas:", timeout: float = 2.0
    ) -> Deferred[TwistedCommandClient]:
        """Open a one-connection pool, wait until Redis answers, and wrap it.

        Fails with :class:`~caas_socket.redis_connection.RedisUnavailable` if
        Redis does not answer within ``timeout``, and ``ValueError`` for a bad URL.
        """

        async def opened() -> TwistedCommandClient:
            redis = await connect(url, reactor, pool_size=1, timeout=timeout)
            return cls(redis, prefix=prefix, clock=reactor, timeout=timeout, owned=True)

        return Deferred.fromCoroutine(opened())

    def publish(self, command: Command, payload: bytes) -> Deferred[int]:
        """PUBLISH on ``{prefix}api``; fires with how many subscribers (nodes) received it.

        Fails with :class:`~caas_socket.redis_connection.RedisUnavailable` when
        Redis does not answer in time (the command may have been delivered).
        """
        return Deferred.fromCoroutine(self._publish(payload))

    async def _publish(self, payload: bytes) -> int:
        reply = await self.redis.execute(
            "PUBLISH", self.channel, payload, within=self._timeout, clock=self._clock
        )
        return int(reply)

    def close(self) -> Deferred[None]:
        """Close the connection if this client opened it (see ``owned``)."""
        if not self._owned:
            return Deferred.fromCoroutine(_nothing())
        return Deferred.fromCoroutine(self.redis.disconnect())


async def _nothing() -> None:
    return None
