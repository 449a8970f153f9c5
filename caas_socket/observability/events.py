"""Counting the node's structured log events as Prometheus counters.

Every lifecycle step already logs one event with an ``event`` field (see
``grep -rn 'event="' caas_socket/``).  Counting those events, rather than
calling Prometheus where they happen, keeps metrics out of the protocol code
and guarantees that the numbers and the logs tell the same story.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.logger import ILogObserver, LogEvent, LogLevel
from zope.interface import implementer

from .metrics import LabelCap, Metrics

__all__ = ["MetricsObserver"]

#: The error code at the end of a refusal reason: ``refused: Device limit reached (device_limit)``.
_REFUSAL_CODE = re.compile(r"\(([^()]*)\)\s*$")


def _count(value: Any) -> int:
    """A non-negative count from a log field; anything else counts as nothing."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(value, 0)


@implementer(ILogObserver)
class MetricsObserver:
    """An ``ILogObserver`` that turns our lifecycle events into counter increments.

    Register it with ``globalLogPublisher.addObserver``.  It never raises (a
    log observer that raises is disabled by the publisher, and a metrics bug
    must not hide the logs): a failure is counted in
    ``caas_metrics_observer_errors_total``.  Events without an ``event`` field
    cost one dict lookup.

    Events that carry a failure are not counted as lifecycle events: the
    namespace's handler-failure logs reuse the ``event`` field for the
    *Socket.IO* event name, which clients choose.
    """

    def __init__(self, metrics: Metrics) -> None:
        m = self._metrics = metrics
        self._accepted = m.connects.labels("accepted")
        self._refused = m.connects.labels("refused")
        self._abandoned = m.connects.labels("abandoned")
        self._levels = {
            level: m.log_events.labels(level.name)
            for level in (LogLevel.warn, LogLevel.error, LogLevel.critical)
        }
        self._reasons = LabelCap()
        self._drain_closed = 0  # drain events carry a running total
        self._codes = LabelCap()
        self._route_cap = LabelCap()
        self._handlers: dict[str, Callable[[LogEvent], None]] = {
            "socket_state": self._socket_state,
            "auth_failed": self._labelled(m.auth_failures, "code"),
            "device_limit": self._plain(m.device_limit),
            "kick": self._labelled(m.kicks, "reason"),
            "handshake_refused": self._labelled(m.handshake_refusals, "status"),
            "websocket_error": self._plain(m.websocket_errors),
            "backend_down": self._labelled(m.backend_down, "backend", str.lower),
            "lease_acquired": self._plain(m.lease_acquired),
            "lease_lost": self._plain(m.lease_lost),
            "lease_reacquired": self._plain(m.lease_reacquired),
            "reconciled": self._reconciled,
            "node_reaped": self._node_reaped,
            "bus_subscribed": self._plain(m.bus_subscriptions),
            "bus_deaf": self._plain(m.bus_deaf),
            "bus_bad_message": self._plain(m.bus_bad_messages),
            "sweep": self._sweep,
            "sweep_close": self._labelled(m.idle_closes, "reason"),
            "token_expired": self._plain(m.token_expiries),
            "token_refreshed": self._plain(m.token_refreshes),
            "token_refresh_refused": self._labelled(m.token_refresh_refusals, "code"),
            "drain": self._drain,
            "command_refused": self._labelled(m.commands_refused, "code"),
            "api_request": self._api_request,
        }

    def _api_request(self, event: LogEvent) -> None:
        self._metrics.api_requests.labels(
            self._route_cap(str(event.get("route", "-"))), str(event.get("status", "-"))
        ).inc()

    def __call__(self, event: LogEvent) -> None:
        try:
            self._observe(event)
        except Exception:
            self._metrics.observer_errors.inc()

    def _observe(self, event: LogEvent) -> None:
        level = self._levels.get(event.get("log_level"))  # type: ignore[arg-type]
        if level is not None:
            level.inc()
        name = event.get("event")
        if name is None or name.__class__ is not str or "log_failure" in event:
            return
        handler = self._handlers.get(name)
        if handler is not None:
            handler(event)

    # -- handler builders ------------------------------------------------------

    @staticmethod
    def _plain(counter: Any) -> Callable[[LogEvent], None]:
        def count(event: LogEvent) -> None:
            counter.inc()

        return count

    def _labelled(
        self, counter: Any, field: str, normalize: Callable[[str], str] | None = None
    ) -> Callable[[LogEvent], None]:
        cap = LabelCap()

        def count(event: LogEvent) -> None:
            value = str(event.get(field, "-"))
            counter.labels(cap(normalize(value) if normalize else value)).inc()

        return count

    # -- events with several counters ----------------------------------------

    def _socket_state(self, event: LogEvent) -> None:
        state = event.get("state")
        if state == "connected":
            self._accepted.inc()
            return
        if state != "disconnected":
            return  # authenticating: counted once it ends either way
        reason = str(event.get("reason") or "-")
        if event.get("previous") == "connected":
            self._metrics.disconnects.labels(self._reasons(reason)).inc()
            duration = event.get("duration")
            if isinstance(duration, int | float) and duration >= 0:
                self._metrics.session_seconds.observe(duration)
            self._metrics.unsent_bytes.inc(_count(event.get("unsent_bytes")))
        elif reason.startswith("refused"):
            self._refused.inc()
            match = _REFUSAL_CODE.search(reason)
            code = match.group(1) if match else "-"
            self._metrics.refusals.labels(self._codes(code)).inc()
        else:
            # The client left (or its connection was closed) during authentication.
            self._abandoned.inc()

    def _reconciled(self, event: LogEvent) -> None:
        m = self._metrics
        m.reconciliations.inc()
        m.reconcile_ghosts.inc(_count(event.get("ghosts")))
        m.reconcile_lost.inc(_count(event.get("lost")))

    def _node_reaped(self, event: LogEvent) -> None:
        self._metrics.nodes_reaped.inc()
        self._metrics.reaped_entries.inc(_count(event.get("count")))

    def _sweep(self, event: LogEvent) -> None:
        m = self._metrics
        m.sweeps.inc()
        m.sweep_closed.inc(_count(event.get("closed")))
        m.sweep_ghosts.inc(_count(event.get("ghosts")))
        m.sweep_reported.inc(_count(event.get("asked")))

    def _drain(self, event: LogEvent) -> None:
        # ``closed`` counts from the start of the drain; a smaller one is a new drain.
        closed = _count(event.get("closed"))
        delta = closed - self._drain_closed if closed >= self._drain_closed else closed
        self._drain_closed = closed
        self._metrics.drain_closed.inc(delta)
