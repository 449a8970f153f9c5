"""Gauges and packet totals, read from the node when Prometheus scrapes.

Counting packets with a Prometheus counter would cost a lock per packet; the
sessions already keep plain integers, so the collector adds them up once per
scrape instead.  Connection counts and readiness are read the same way: the
numbers are exact at scrape time and cost nothing in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger

from ..server.socket import SocketState

__all__ = ["NodeCollector", "NodeView", "ServiceView"]


class NodeView(Protocol):
    """What the collector reads from a node, at scrape time only."""

    def socket_counts(self) -> tuple[int, int]:
        """Sockets ``(connected, authenticating)``, over every namespace."""

    def engine_sessions(self) -> int:
        """Open Engine.IO sessions (connections)."""

    def packet_totals(self) -> tuple[int, int]:
        """Packets received and messages sent since start."""

    def readiness(self) -> Mapping[str, bool]:
        """Each readiness condition; ready when all hold."""

    def drain_state(self) -> tuple[bool, int]:
        """``(draining, connections still to close)``."""

    def registered_devices(self) -> int:
        """Connections this node holds in the device registry."""

    def protection_counts(self) -> tuple[int, int, int]:
        """``(connects refused by the rate limit, slow consumers dropped, bytes dropped)``."""


class ServiceView:
    """A :class:`NodeView` of a ``CaasService`` (or anything shaped like one).

    Reads ``socket_server``, ``readiness()`` and ``local.registered``;
    ``draining`` and ``drain_remaining`` are read with defaults, so this works
    on a service that does not drain yet.
    """

    def __init__(self, service: Any) -> None:
        self._service = service

    def socket_counts(self) -> tuple[int, int]:
        server = self._service.socket_server
        connected = sum(len(nsp.sockets) for nsp in server.namespaces.values())
        authenticating = sum(
            1
            for connection in list(server.connections.values())
            for socket in connection.sockets.values()
            if socket.state is SocketState.AUTHENTICATING
        )
        return connected, authenticating

    def engine_sessions(self) -> int:
        return len(self._service.socket_server.connections)

    def packet_totals(self) -> tuple[int, int]:
        packets_in, packets_out = self._service.socket_server.packet_totals()
        return packets_in, packets_out

    def readiness(self) -> Mapping[str, bool]:
        readiness: Mapping[str, bool] = self._service.readiness()
        return readiness

    def drain_state(self) -> tuple[bool, int]:
        service = self._service
        return bool(getattr(service, "draining", False)), int(
            getattr(service, "drain_remaining", 0) or 0
        )

    def registered_devices(self) -> int:
        return len(self._service.local.registered)

    def protection_counts(self) -> tuple[int, int, int]:
        factory = getattr(self._service, "factory", None)
        limiter = getattr(factory, "limiter", None)
        return (
            int(getattr(limiter, "refused", 0)),
            int(getattr(factory, "slow_consumers", 0)),
            int(getattr(factory, "dropped_bytes", 0)),
        )


class NodeCollector(Collector):
    """A custom collector reading a :class:`NodeView` on every scrape.

    Each group of metrics is read on its own: a part of the node that fails
    to answer is logged and left out of that scrape, and the rest is still
    exposed (a scrape error would blank every metric at once).
    """

    log = Logger()

    def __init__(self, view: NodeView) -> None:
        self._view = view

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so registering does not read the node."""
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        return self._families(self._view)

    def _families(self, view: NodeView | None) -> Iterator[Metric]:
        parts = (
            self._sockets,
            self._packets,
            self._readiness,
            self._drain,
            self._devices,
            self._protection,
        )
        for part in parts:
            try:
                # Each part reads everything before yielding: a failure leaves out whole groups.
                families = list(part(view))
            except Exception:
                self.log.failure("metrics: reading {part} failed", part=part.__name__)
                continue
            yield from families

    @staticmethod
    def _protection(view: NodeView | None) -> Iterator[Metric]:
        limited = CounterMetricFamily(
            "caas_connects_rate_limited", "Handshakes refused by the per-address connect rate limit"
        )
        slow = CounterMetricFamily(
            "caas_slow_consumers", "Connections dropped for not reading (--max-outbound-buffer)"
        )
        dropped = CounterMetricFamily(
            "caas_outbound_dropped_bytes", "Bytes queued for dropped slow consumers"
        )
        if view is not None:
            refused, consumers, lost = view.protection_counts()
            limited.add_metric([], refused)
            slow.add_metric([], consumers)
            dropped.add_metric([], lost)
        yield limited
        yield slow
        yield dropped

    @staticmethod
    def _sockets(view: NodeView | None) -> Iterator[Metric]:
        sockets = GaugeMetricFamily("caas_sockets", "Namespace sockets, by state", labels=["state"])
        sessions = GaugeMetricFamily("caas_engine_sessions", "Open Engine.IO sessions")
        if view is not None:
            connected, authenticating = view.socket_counts()
            sockets.add_metric(["connected"], connected)
            sockets.add_metric(["authenticating"], authenticating)
            sessions.add_metric([], view.engine_sessions())
        yield sockets
        yield sessions

    @staticmethod
    def _packets(view: NodeView | None) -> Iterator[Metric]:
        received = CounterMetricFamily("caas_packets_in", "Engine.IO packets received")
        sent = CounterMetricFamily("caas_packets_out", "Messages sent (one per Socket.IO packet)")
        if view is not None:
            packets_in, packets_out = view.packet_totals()
            received.add_metric([], packets_in)
            sent.add_metric([], packets_out)
        yield received
        yield sent

    @staticmethod
    def _readiness(view: NodeView | None) -> Iterator[Metric]:
        ready = GaugeMetricFamily("caas_ready", "1 when a load balancer should send clients here")
        conditions = GaugeMetricFamily(
            "caas_ready_condition", "Each readiness condition, 1 if it holds", labels=["condition"]
        )
        if view is not None:
            checks = dict(view.readiness())
            ready.add_metric([], 1 if all(checks.values()) else 0)
            for name, holds in sorted(checks.items()):
                conditions.add_metric([name], 1 if holds else 0)
        yield ready
        yield conditions

    @staticmethod
    def _drain(view: NodeView | None) -> Iterator[Metric]:
        draining = GaugeMetricFamily("caas_draining", "1 while the node drains its connections")
        remaining = GaugeMetricFamily(
            "caas_drain_remaining", "Connections the drain has still to close"
        )
        if view is not None:
            is_draining, left = view.drain_state()
            draining.add_metric([], 1 if is_draining else 0)
            remaining.add_metric([], left)
        yield draining
        yield remaining

    @staticmethod
    def _devices(view: NodeView | None) -> Iterator[Metric]:
        devices = GaugeMetricFamily(
            "caas_registered_devices", "Connections of this node held in the device registry"
        )
        if view is not None:
            devices.add_metric([], view.registered_devices())
        yield devices
