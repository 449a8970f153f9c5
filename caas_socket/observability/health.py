"""The health and metrics HTTP endpoint: ``/healthz``, ``/readyz``, ``/metrics``.

It listens apart from the Socket.IO port (``--health-listen``) so that probes
and scrapes neither go through the public load balancer nor count as clients.

* ``/healthz``: liveness.  Answering at all is the proof: the reactor turns.
  A supervisor restarts the process when it stops answering.
* ``/readyz``: readiness, 200 or 503 with each condition.  A load balancer
  stops sending clients while it is 503 (no lease, registry or bus down,
  draining) without anyone restarting the process.
* ``/metrics``: the Prometheus text exposition of the node's own registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ..web import QuietSite
from .metrics import Metrics

__all__ = ["HealthResource", "build_health_site"]

_JSON = b"application/json"
#: Probes are frequent and idle in between; a stuck client is dropped quickly.
_IDLE_TIMEOUT = 30.0


class HealthResource(Resource):
    """Every path of the health endpoint; a leaf, so it sees them all."""

    isLeaf = True
    log = Logger()

    def __init__(self, readiness: Callable[[], Mapping[str, bool]], metrics: Metrics) -> None:
        super().__init__()
        self._readiness = readiness
        self._metrics = metrics
        self._routes: dict[bytes, Callable[[Request], bytes]] = {
            b"/healthz": self._healthz,
            b"/readyz": self._readyz,
            b"/metrics": self._expose,
        }

    def render(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        route = self._routes.get(request.path)
        if route is None:
            return _json(request, 404, {"error": "not_found"})
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _json(request, 405, {"error": "method_not_allowed"})
        return route(request)

    def _healthz(self, request: Request) -> bytes:
        return _json(request, 200, {"status": "alive"})

    def _readyz(self, request: Request) -> bytes:
        try:
            checks = {str(name): bool(holds) for name, holds in self._readiness().items()}
        except Exception:
            self.log.failure("readiness check failed")
            return _json(request, 503, {"ready": False, "checks": {}, "error": "check_failed"})
        ready = all(checks.values())
        return _json(request, 200 if ready else 503, {"ready": ready, "checks": checks})

    def _expose(self, request: Request) -> bytes:
        try:
            body = generate_latest(self._metrics.registry)
        except Exception:
            self.log.failure("metrics exposition failed")
            return _json(request, 500, {"error": "metrics_failed"})
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return body


def _json(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", _JSON)
    return json.dumps(body, separators=(",", ":")).encode()


def build_health_site(
    readiness: Callable[[], Mapping[str, bool]], metrics: Metrics, *, reactor: IReactorTime
) -> Site:
    """The HTTP factory of the health endpoint, for a :class:`~caas_socket.listeners.Listener`.

    :param readiness: called on every ``/readyz``; the node is ready when every
        condition holds (``CaasService.readiness``).
    :param reactor: used for connection timeouts; passed so that this module
        never imports the global reactor (``Site`` would, given none).
    """
    return QuietSite(HealthResource(readiness, metrics), timeout=_IDLE_TIMEOUT, reactor=reactor)
