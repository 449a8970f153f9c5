"""The cluster bus: Redis pub/sub, one channel per node.

Each node subscribes to its own channel on a connection of its own, kept up by
a ``ClientService`` that reconnects with backoff and subscribes again.  A
subscription can fail silently (a proxy restarting, a Redis that forgot its
subscribers), so the node publishes a probe to itself every
``probe_interval``: a node whose probes stop arriving reconnects instead of
going deaf, and is reported not ready meanwhile.

Publishes go through one connection of their own, so messages of this node
reach each other node in the order they were sent.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ..periodic import PeriodicService
from ..redis_connection import RedisConnection, RedisURL
from ..registry.health import BackendHealth
from . import messages

__all__ = ["Bus", "channel_of"]


def channel_of(prefix: str, server_id: str) -> bytes:
    """The channel node ``server_id`` listens on."""
    return f"{prefix}bus:{server_id}".encode()


class _Subscriber(txredisapi.SubscriberProtocol):
    """One subscriber connection; hands every message to the bus."""

    bus: Bus

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        if channel == self.bus.channel:
            self.bus.received(message)
        else:
            self.bus.received_on(channel, message)

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)
        self.bus.subscriber_lost(self)


class _SubscriberFactory(Factory):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def buildProtocol(self, addr: Any) -> _Subscriber:
        protocol = _Subscriber(charset=None, convertNumbers=False)
        protocol.factory = self
        protocol.bus = self.bus
        return protocol


class Bus(MultiService):
    """Publishes to other nodes and delivers what they publish to this one.

    :param handler: called with every decoded message for this node.
    :param publisher: a connection used only by the bus (pool size 1), for order.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: RedisURL,
        publisher: RedisConnection,
        *,
        prefix: str,
        server_id: str,
        handler: Callable[[messages.Message], None],
        health: BackendHealth,
        probe_interval: float = 2.0,
    ) -> None:
        #: Other channels this node listens to (e.g. presence), with their handlers.
        self.extra_channels: dict[bytes, Callable[[bytes], None]] = {}
        super().__init__()
        self._reactor = reactor
        self._url = url
        self._publisher = publisher
        self._prefix = prefix
        self.server_id = server_id
        self.channel = channel_of(prefix, server_id)
        self._handler = handler
        self.health = health
        self.probe_interval = probe_interval
        self._subscriber: _Subscriber | None = None
        self._client = ClientService(
            publisher.endpoint,
            _SubscriberFactory(self),
            # Twisted's default jitter adds up to a second to every retry,
            # even the first one after a deaf subscriber was dropped on purpose.
            retryPolicy=backoffPolicy(
                initialDelay=0.1, maxDelay=2.0, factor=2.0, jitter=lambda: random.uniform(0, 0.1)
            ),
            clock=reactor,
            prepareConnection=self._subscribe,
        )
        self._client.setServiceParent(self)
        PeriodicService(reactor, probe_interval, self._probe, "bus probe").setServiceParent(self)
        #: The probe in flight, and when Redis first accepted it (None: not yet).
        self._nonce: str | None = None
        self._probe_sent_at: float | None = None
        self.verified_at: float | None = None
        self.subscriptions = 0
        self.received_count = 0
        self.dropped = 0

    # -- subscribing ---------------------------------------------------------

    async def _subscribe_async(self, protocol: _Subscriber) -> None:
        if self._url.password is not None:
            await protocol.auth(self._url.password, self._url.username)
        await protocol.subscribe([self.channel, *self.extra_channels])
        self._subscriber = protocol
        self._nonce = self._probe_sent_at = None  # a new subscription gets a new probe
        self.subscriptions += 1
        if self.subscriptions > 1:
            # What was published to us meanwhile is gone, kicks among them: the
            # next reconcile finds our connections whose device moved on.
            self.health.dirty = True
        self.log.info(
            "bus subscribed to {channel} (subscription {n})",
            channel=self.channel.decode(),
            n=self.subscriptions,
            event="bus_subscribed",
        )
        # Prove it at once rather than at the next tick.
        await self._probe()

    def _subscribe(self, protocol: _Subscriber) -> Deferred[None]:
        return Deferred.fromCoroutine(self._subscribe_async(protocol))

    def subscriber_lost(self, protocol: _Subscriber) -> None:
        if self._subscriber is protocol:
            self._subscriber = None
            self.verified_at = None

    @property
    def verified(self) -> bool:
        """Whether a probe came back recently: the node hears the cluster."""
        if self.verified_at is None:
            return False
        return self._reactor.seconds() - self.verified_at <= 3 * self.probe_interval

    # -- probing -------------------------------------------------------------

    async def _probe(self) -> None:
        """Publish a probe to ourselves; reconnect if the last one never came back.

        The wait is counted from when Redis accepted the probe: while
        publishing fails (Redis away, the publisher reconnecting), the
        subscriber is not at fault and is left alone.
        """
        now = self._reactor.seconds()
        if self._subscriber is None:
            return
        if self._probe_sent_at is not None and now - self._probe_sent_at > 2 * self.probe_interval:
            # The last probe never came back over a connection that looks fine.
            self.log.warn(
                "bus probe not received for {seconds:.1f}s: reconnecting the subscriber",
                seconds=now - self._probe_sent_at,
                event="bus_deaf",
            )
            self._nonce = self._probe_sent_at = None
            self._subscriber.transport.abortConnection()
            return
        if self._nonce is None:
            self._nonce = secrets.token_hex(8)
        nonce = self._nonce
        published = await self.publish(self.server_id, messages.Probe(self.server_id, nonce))
        if published and self._nonce == nonce and self._probe_sent_at is None:
            self._probe_sent_at = now

    # -- traffic -------------------------------------------------------------

    def received(self, payload: bytes) -> None:
        self.received_count += 1
        try:
            found = messages.decode_many(payload)
        except messages.BusDecodeError as e:
            self.dropped += 1
            self.log.warn("bus message dropped: {error}", error=str(e), event="bus_bad_message")
            return
        for message in found:
            if isinstance(message, messages.Probe):
                if message.nonce == self._nonce:
                    self._nonce = self._probe_sent_at = None
                    self.verified_at = self._reactor.seconds()
                continue
            try:
                self._handler(message)
            except Exception:
                self.log.failure("bus handler failed for {kind}", kind=type(message).__name__)

    def received_on(self, channel: bytes, payload: bytes) -> None:
        handler = self.extra_channels.get(channel)
        if handler is None:
            return
        try:
            handler(payload)
        except Exception:
            self.log.failure("handler of channel {channel} failed", channel=channel)

    async def publish(self, server_id: str, message: messages.Message) -> bool:
        """Publish to one node; ``False`` (logged once per outage) when Redis fails."""
        return await self.publish_raw(channel_of(self._prefix, server_id), messages.encode(message))

    async def publish_raw(self, channel: bytes, payload: bytes) -> bool:
        try:
            await self._publisher.execute("PUBLISH", channel, payload)
        except Exception as e:
            self.health.failed("publish", e)
            return False
        self.health.succeeded()
        return True

    async def run_script(self, script: Any, args: Any) -> Any:
        """Run a publishing script on the ordered publisher connection."""
        return await self._publisher.run_script(script, args)
