"""Every Prometheus metric of one node, in a registry of its own.

Nothing here is touched per packet.  Counters are fed by
:class:`~caas_socket.observability.events.MetricsObserver` from the log events
the code already emits, gauges and packet totals are read at scrape time by
:class:`~caas_socket.observability.node.NodeCollector`, and Redis latencies
arrive through :attr:`RedisConnection.observer
<caas_socket.redis_connection.RedisConnection.observer>`.

The registry is never prometheus_client's global ``REGISTRY``: tests and
several nodes in one process each keep their own numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from .node import NodeCollector, NodeView

__all__ = ["LATENCY_BUCKETS", "LabelCap", "Metrics", "RedisObserver"]

#: Redis round trips: 0.1 ms on a local socket ... 1 s, the default call timeout.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
#: How long clients stay: seconds (flapping networks) ... a day (desktop apps).
SESSION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0)

#: ``observer(what, seconds, ok)``, the shape of ``RedisConnection.observer``.
RedisObserver = Callable[[str, float, bool], None]


class LabelCap:
    """At most ``limit`` distinct values for one label; later newcomers become ``other``.

    Label values come from log fields (reasons, codes, script names).  Today
    they are few and chosen by our code, but a value that ever carried
    something unbounded would create one time series per value and take the
    Prometheus server down; the cap makes that impossible whatever the source.
    """

    def __init__(self, limit: int = 32, width: int = 64) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._width = width

    def __call__(self, value: object) -> str:
        text = value if isinstance(value, str) else str(value)
        text = text[: self._width] or "-"
        if text in self._seen:
            return text
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(text)
        return text


class Metrics:
    """The metric objects of one node and the registry that exposes them.

    :param process_metrics: add prometheus_client's process (CPU, memory, file
        descriptors), platform and GC collectors; tests turn them off to keep
        the exposition short.
    """

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        c = self._counter
        # -- sockets ---------------------------------------------------------
        self.connects = c("caas_connects", "Namespace CONNECTs by outcome", ["result"])
        self.refusals = c("caas_connect_refusals", "CONNECTs refused, by error code", ["code"])
        self.disconnects = c(
            "caas_disconnects", "Connected sockets that ended, by reason", ["reason"]
        )
        self.session_seconds = Histogram(
            "caas_socket_connected_seconds",
            "How long sockets stayed connected",
            buckets=SESSION_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = c("caas_auth_failures", "Failed authentications, by code", ["code"])
        self.device_limit = c("caas_device_limit_refusals", "CONNECTs refused by the device limit")
        self.kicks = c("caas_kicks", "Sockets kicked (replaced, evicted), by reason", ["reason"])
        self.handshake_refusals = c(
            "caas_handshake_refusals", "WebSocket handshakes refused, by HTTP status", ["status"]
        )
        self.websocket_errors = c(
            "caas_websocket_errors", "Sessions failed by the WebSocket layer (bad frames)"
        )
        self.idle_closes = c("caas_idle_closes", "Connections closed by the sweeper", ["reason"])
        self.unsent_bytes = c(
            "caas_unsent_bytes", "Outbound bytes still queued when their connection ended"
        )
        self.commands_refused = c(
            "caas_commands_refused", "Commands from other services refused, by code", ["code"]
        )
        self.api_requests = c(
            "caas_api_requests", "HTTP API requests, by route and status", ["route", "status"]
        )
        self.sweeps = c("caas_sweeps", "Sweeper passes")
        self.sweep_closed = c("caas_sweep_closed", "Idle connections closed by sweeper passes")
        self.sweep_ghosts = c(
            "caas_sweep_ghosts_removed", "Registry entries without a connection, removed by sweeps"
        )
        self.sweep_reported = c(
            "caas_sweep_reported", "Stale entries of other nodes reported to their node"
        )
        self.token_expiries = c("caas_token_expiries", "Connections whose token expired")
        self.token_refreshes = c("caas_token_refreshes", "Tokens refreshed on a live connection")
        self.token_refresh_refusals = c(
            "caas_token_refresh_refusals", "Token refreshes refused, by code", ["code"]
        )
        self.presence = c("caas_presence_events", "Presence changes, by status", ["status"])
        self.drain_closed = c("caas_drain_closed", "Connections closed while draining")
        # -- cluster ---------------------------------------------------------
        self.lease_acquired = c("caas_lease_acquired", "Leases taken (start, after a loss)")
        self.lease_lost = c("caas_lease_lost", "Times this node found itself reaped as dead")
        self.lease_reacquired = c(
            "caas_lease_reacquired", "Leases found vanished (registry restart) and taken back"
        )
        self.reconciliations = c("caas_reconciliations", "Registry reconciliations done")
        self.reconcile_ghosts = c(
            "caas_reconcile_ghosts_removed", "Dead entries of this node removed by reconciliation"
        )
        self.reconcile_lost = c(
            "caas_reconcile_lost", "Entries of this node lost to a newer connection elsewhere"
        )
        self.nodes_reaped = c("caas_nodes_reaped", "Dead nodes reaped by this node")
        self.reaped_entries = c("caas_reaped_entries", "Entries removed with reaped nodes")
        self.backend_down = c(
            "caas_backend_down", "Backend outage episodes (first failure of each)", ["backend"]
        )
        self.bus_subscriptions = c("caas_bus_subscriptions", "Bus (re)subscriptions")
        self.bus_deaf = c(
            "caas_bus_deaf_reconnects", "Bus subscribers reconnected after a lost probe"
        )
        self.bus_bad_messages = c("caas_bus_bad_messages", "Undecodable bus messages dropped")
        # -- Redis latency -----------------------------------------------------
        self.registry_op_seconds = Histogram(
            "caas_registry_op_seconds",
            "Registry Redis calls (a script with its NOSCRIPT fallback is one call)",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry_op_failures = c(
            "caas_registry_op_failures", "Registry Redis calls that failed or timed out", ["op"]
        )
        self.bus_publish_seconds = Histogram(
            "caas_bus_publish_seconds",
            "Bus publications (PUBLISH or a publishing script)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.bus_publish_failures = c(
            "caas_bus_publish_failures", "Bus publications that failed or timed out"
        )
        # -- the logs themselves ---------------------------------------------
        self.log_events = c(
            "caas_log_events", "Log events of level warn or above, by level", ["level"]
        )
        self.observer_errors = c(
            "caas_metrics_observer_errors", "Log events the metrics observer failed to count"
        )

    def watch(self, view: NodeView) -> NodeCollector:
        """Expose ``view``'s gauges and packet totals; returns the collector (to unregister)."""
        collector = NodeCollector(view)
        self.registry.register(collector)
        return collector

    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def redis_observer(self, kind: str) -> RedisObserver:
        """The ``RedisConnection.observer`` of the ``"registry"`` or the ``"bus"`` pool.

        :raises ValueError: for any other ``kind``.
        """
        if kind == "registry":
            ops = LabelCap()
            seconds, failures = self.registry_op_seconds, self.registry_op_failures

            def observe_registry(what: str, elapsed: float, ok: bool) -> None:
                op = ops(what)
                seconds.labels(op).observe(max(elapsed, 0.0))
                if not ok:
                    failures.labels(op).inc()

            return observe_registry
        if kind == "bus":
            histogram, failed = self.bus_publish_seconds, self.bus_publish_failures

            def observe_bus(what: str, elapsed: float, ok: bool) -> None:
                histogram.observe(max(elapsed, 0.0))
                if not ok:
                    failed.inc()

            return observe_bus
        raise ValueError(f"unknown Redis connection kind {kind!r} (registry or bus)")
