"""Observability of a node: Prometheus metrics, health endpoints, structured logs.

Metrics never sit on a per-packet path: counters are fed by a log observer
(:class:`MetricsObserver`) from the lifecycle events the code already logs,
gauges and packet totals are read at scrape time (:class:`NodeCollector`),
and Redis latencies come through ``RedisConnection.observer``.
:func:`build_health_site` serves ``/healthz``, ``/readyz`` and ``/metrics``;
:mod:`caas_socket.observability.logs` has the ``twistd --logger`` observers.
"""

from .events import MetricsObserver
from .health import build_health_site
from .logs import json_observer, text_observer
from .metrics import LabelCap, Metrics
from .node import NodeCollector, NodeView, ServiceView

__all__ = [
    "LabelCap",
    "Metrics",
    "MetricsObserver",
    "NodeCollector",
    "NodeView",
    "ServiceView",
    "build_health_site",
    "json_observer",
    "text_observer",
]
