"""Metrics from log events, scrape-time gauges, the Redis latency hook, JSON logs."""

from __future__ import annotations

import io
import json
import math
import os
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, capturedLogs

from caas_socket.app import CaasApp
from caas_socket.auth import JWTVerifier, KeySet, mint_token
from caas_socket.observability import LabelCap, Metrics, MetricsObserver, NodeCollector, ServiceView
from caas_socket.observability.logs import LevelFilter, json_observer, text_observer
from caas_socket.registry.interfaces import DeviceLimitPolicy
from caas_socket.registry.memory import MemoryRegistry
from caas_socket.server import SocketServer
from tests.support.fakes import new_server, open_client
from tests.unit.test_redis_connection import run, start

SECRET = b"unit-test-secret-of-at-least-32-bytes!!"


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def observed() -> tuple[Metrics, MetricsObserver]:
    metrics = Metrics(process_metrics=False)
    return metrics, MetricsObserver(metrics)


# -- the log observer ------------------------------------------------------------


GONE = {"state": "disconnected"}
REFUSED = {**GONE, "previous": "authenticating", "reason": "refused: Authentication failed (x)"}


@pytest.mark.parametrize(
    ("event", "fields", "counter", "labels", "expected"),
    [
        ("socket_state", {"state": "connected"}, "connects", {"result": "accepted"}, 1),
        ("socket_state", {"state": "authenticating"}, "connects", {"result": "accepted"}, 0),
        ("socket_state", REFUSED, "connects", {"result": "refused"}, 1),
        ("socket_state", REFUSED, "connect_refusals", {"code": "x"}, 1),
        ("socket_state", {**GONE, "previous": "authenticating", "reason": "transport close"},
         "connects", {"result": "abandoned"}, 1),
        ("socket_state", {**GONE, "previous": "connected", "reason": "ping timeout"},
         "disconnects", {"reason": "ping timeout"}, 1),
        ("auth_failed", {"code": "expired"}, "auth_failures", {"code": "expired"}, 1),
        ("device_limit", {}, "device_limit_refusals", {}, 1),
        ("kick", {"reason": "evicted"}, "kicks", {"reason": "evicted"}, 1),
        ("handshake_refused", {"status": 400}, "handshake_refusals", {"status": "400"}, 1),
        ("websocket_error", {}, "websocket_errors", {}, 1),
        ("backend_down", {"backend": "Redis"}, "backend_down", {"backend": "redis"}, 1),
        ("lease_acquired", {}, "lease_acquired", {}, 1),
        ("lease_lost", {}, "lease_lost", {}, 1),
        ("lease_reacquired", {}, "lease_reacquired", {}, 1),
        ("reconciled", {"live": 4, "ghosts": 2, "lost": 1}, "reconciliations", {}, 1),
        ("reconciled", {"live": 4, "ghosts": 2, "lost": 1}, "reconcile_ghosts_removed", {}, 2),
        ("reconciled", {"live": 4, "ghosts": 2, "lost": 1}, "reconcile_lost", {}, 1),
        ("node_reaped", {"dead": "n2", "count": 7}, "nodes_reaped", {}, 1),
        ("node_reaped", {"dead": "n2", "count": 7}, "reaped_entries", {}, 7),
        ("bus_subscribed", {}, "bus_subscriptions", {}, 1),
        ("bus_deaf", {}, "bus_deaf_reconnects", {}, 1),
        ("bus_bad_message", {}, "bus_bad_messages", {}, 1),
        ("sweep", {"closed": 3, "asked": 2, "ghosts": 1}, "sweeps", {}, 1),
        ("sweep", {"closed": 3, "asked": 2, "ghosts": 1}, "sweep_closed", {}, 3),
        ("sweep", {"closed": 3, "asked": 2, "ghosts": 1}, "sweep_reported", {}, 2),
        ("sweep", {"closed": 3, "asked": 2, "ghosts": 1}, "sweep_ghosts_removed", {}, 1),
        ("sweep_close", {"reason": "idle"}, "idle_closes", {"reason": "idle"}, 1),
        ("token_expired", {}, "token_expiries", {}, 1),
        ("token_refreshed", {}, "token_refreshes", {}, 1),
        ("token_refresh_refused", {"code": "expired"}, "token_refresh_refusals",
         {"code": "expired"}, 1),
        ("drain", {"closed": 10, "remaining": 5}, "drain_closed", {}, 10),
        ("node_stopped", {}, "drain_closed", {}, 0),
    ],
)  # fmt: skip
def test_each_event_feeds_its_counter(
    event: str, fields: dict[str, Any], counter: str, labels: dict[str, str], expected: float
) -> None:
    metrics, observer = observed()
    Logger(observer=observer).info("whatever {event}", event=event, **fields)
    assert value(metrics, f"caas_{counter}_total", **labels) == expected
    assert value(metrics, "caas_metrics_observer_errors_total") == 0


def test_drain_events_carry_a_running_total() -> None:
    metrics, observer = observed()
    for closed in (10, 20, 25, 4):  # the last one: a second drain
        observer({"event": "drain", "closed": closed, "remaining": 25 - closed})
    assert value(metrics, "caas_drain_closed_total") == 29


def test_connected_duration_and_log_levels() -> None:
    metrics, observer = observed()
    log = Logger(observer=observer)
    log.info("x", event="socket_state", state="disconnected", previous="connected", duration=90.0)
    log.warn("w")
    log.error("e")
    log.error("e")
    log.debug("d", event="listening")
    assert value(metrics, "caas_socket_connected_seconds_bucket", le="300.0") == 1
    assert value(metrics, "caas_socket_connected_seconds_bucket", le="60.0") == 0
    assert value(metrics, "caas_log_events_total", level="warn") == 1
    assert value(metrics, "caas_log_events_total", level="error") == 2


def test_failures_and_foreign_events_are_not_lifecycle_events() -> None:
    metrics, observer = observed()
    log = Logger(observer=observer)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        # What the namespace logs when a client's "kick" handler fails.
        log.failure("handler of {event!r} failed", event="kick")
    observer({"event": 42})
    observer({"no": "event"})
    assert value(metrics, "caas_kicks_total", reason="-") == 0
    assert value(metrics, "caas_log_events_total", level="critical") == 1


def test_the_observer_never_raises() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no")

    metrics, observer = observed()
    observer({"event": "kick", "reason": Unprintable()})
    observer({"event": "reconciled", "ghosts": "many", "lost": -3})
    observer({"event": "socket_state", "state": "disconnected", "previous": "connected",
              "duration": math.nan})  # fmt: skip
    assert value(metrics, "caas_metrics_observer_errors_total") == 1
    assert value(metrics, "caas_reconciliations_total") == 1
    assert value(metrics, "caas_reconcile_ghosts_removed_total") == 0


def test_label_values_are_capped() -> None:
    cap = LabelCap(limit=2, width=5)
    seen = [cap(v) for v in ("a", "b", "c", "a", "abcdefgh", "")]
    assert seen == ["a", "b", "other", "a", "other", "other"]
    metrics, observer = observed()
    for n in range(40):
        observer({"event": "auth_failed", "code": f"code{n}"})
    assert value(metrics, "caas_auth_failures_total", code="other") == 8


def test_the_real_app_events_become_counters() -> None:
    clock = Clock()
    clock.advance(1_800_000_000)
    server = SocketServer(clock)
    CaasApp(
        server,
        verifier=JWTVerifier(keys=KeySet.from_secret(SECRET), now=clock.seconds),
        registry=MemoryRegistry.standalone(clock),
        server_id="n1",
        clock=clock,
        max_devices=1,
        policy=DeviceLimitPolicy("reject"),
    )
    token = mint_token(SECRET, sub="alice", tenant_id="acme", now=clock.seconds)
    with capturedLogs() as events:
        first, _ = open_client(server, {"deviceId": "d1"})
        first.receive("40" + json.dumps({"token": token}))
        again, _ = open_client(server, {"deviceId": "d1"})  # same device: replaces the first
        again.receive("40" + json.dumps({"token": token}))
        other, _ = open_client(server, {"deviceId": "d2"})  # a second device: over the limit
        other.receive("40" + json.dumps({"token": token}))
        bad, _ = open_client(server, {"deviceId": "d3"})
        bad.receive('40{"token":"nope"}')
        clock.advance(30)
        again.receive("41")
    metrics, observer = observed()
    for event in events:
        observer(event)
    assert value(metrics, "caas_connects_total", result="accepted") == 2
    assert value(metrics, "caas_connects_total", result="refused") == 2
    assert value(metrics, "caas_connect_refusals_total", code="device_limit") == 1
    assert value(metrics, "caas_connect_refusals_total", code="malformed_token") == 1
    assert value(metrics, "caas_auth_failures_total", code="malformed_token") == 1
    assert value(metrics, "caas_device_limit_refusals_total") == 1
    assert value(metrics, "caas_kicks_total", reason="replaced") == 1
    assert value(metrics, "caas_disconnects_total", reason="server namespace disconnect") == 1
    assert value(metrics, "caas_disconnects_total", reason="client namespace disconnect") == 1
    assert value(metrics, "caas_socket_connected_seconds_count") == 2


# -- scrape-time gauges -------------------------------------------------------------


class FakeView:
    def __init__(self) -> None:
        self.ready = {"accepting": True, "lease": False}
        self.broken = False

    def socket_counts(self) -> tuple[int, int]:
        return 5, 2

    def engine_sessions(self) -> int:
        return 6

    def packet_totals(self) -> tuple[int, int]:
        if self.broken:
            raise RuntimeError("gone")
        return 100, 250

    def readiness(self) -> dict[str, bool]:
        return self.ready

    def drain_state(self) -> tuple[bool, int]:
        return True, 4

    def registered_devices(self) -> int:
        return 5


def test_the_collector_reads_the_view_at_scrape_time() -> None:
    metrics, view = Metrics(process_metrics=False), FakeView()
    metrics.watch(view)
    assert value(metrics, "caas_sockets", state="connected") == 5
    assert value(metrics, "caas_sockets", state="authenticating") == 2
    assert value(metrics, "caas_engine_sessions") == 6
    assert value(metrics, "caas_packets_in_total") == 100
    assert value(metrics, "caas_packets_out_total") == 250
    assert value(metrics, "caas_ready") == 0
    assert value(metrics, "caas_ready_condition", condition="accepting") == 1
    assert value(metrics, "caas_ready_condition", condition="lease") == 0
    assert (value(metrics, "caas_draining"), value(metrics, "caas_drain_remaining")) == (1, 4)
    assert value(metrics, "caas_registered_devices") == 5
    view.ready["lease"] = True
    assert value(metrics, "caas_ready") == 1
    view.broken = True
    with capturedLogs() as events:
        assert metrics.registry.get_sample_value("caas_packets_in_total") is None
        assert value(metrics, "caas_engine_sessions") == 6  # the rest is still there
    assert any("log_failure" in e for e in events)


def test_describing_does_not_read_the_view() -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"read {name} at registration")

    families = list(NodeCollector(Untouchable()).describe())  # type: ignore[arg-type]
    assert "caas_ready" in {f.name for f in families}


def test_service_view_on_a_real_server() -> None:
    server, _ = new_server()
    server.of("/slow").use(lambda socket: Deferred())  # authentication that never ends
    service = SimpleNamespace(
        socket_server=server,
        readiness=lambda: {"accepting": True},
        local=SimpleNamespace(registered={"s1": object()}),
    )
    metrics = Metrics(process_metrics=False)
    metrics.watch(ServiceView(service))
    a, _ = open_client(server)
    a.receive("40", '42["x"]')
    b, _ = open_client(server)
    b.receive("40/slow,")
    c, _ = open_client(server)
    c.receive("40")
    c.close()
    assert value(metrics, "caas_sockets", state="connected") == 1
    assert value(metrics, "caas_sockets", state="authenticating") == 1
    assert value(metrics, "caas_engine_sessions") == 2
    assert value(metrics, "caas_packets_in_total") == 4  # c's packet stays counted
    assert value(metrics, "caas_packets_out_total") == 2  # the two CONNECT acks
    assert value(metrics, "caas_registered_devices") == 1
    assert (value(metrics, "caas_draining"), value(metrics, "caas_drain_remaining")) == (0, 0)
    service.draining, service.drain_remaining = True, 7
    assert (value(metrics, "caas_draining"), value(metrics, "caas_drain_remaining")) == (1, 7)


def test_service_view_on_a_real_service() -> None:
    from caas_socket.config import Config
    from caas_socket.service import CaasService

    service = CaasService(Config.default(), MemoryReactorClock())
    metrics = Metrics(process_metrics=False)
    metrics.watch(ServiceView(service))
    assert value(metrics, "caas_ready_condition", condition="lease") == 0  # not started
    assert value(metrics, "caas_ready_condition", condition="registry") == 1
    assert value(metrics, "caas_ready") == 0
    assert value(metrics, "caas_draining") == 0
    assert value(metrics, "caas_registered_devices") == 0


# -- the Redis latency hook -------------------------------------------------------------


def test_every_redis_call_is_timed_on_the_reactor() -> None:
    reactor = MemoryReactorClock()
    connection, server = start(reactor)
    calls: list[tuple[str, float, bool]] = []
    connection.observer = lambda what, seconds, ok: calls.append((what, round(seconds, 6), ok))
    results = run(connection.execute("GET", "k"))
    reactor.advance(0.003)
    server.reply(b"$1\r\nv\r\n")
    assert results == [b"v"]
    run(connection.execute("GET", "k", within=0.2))
    reactor.advance(0.2)
    assert len(calls) == 1
    reactor.advance(0.01)
    # timeouts share a wheel of 10 ms ticks: never early, at most a tick late
    assert calls[0] == ("GET", 0.003, True)
    assert calls[1][0::2] == ("GET", False) and 0.2 <= calls[1][1] <= 0.21


def test_a_failing_observer_does_not_fail_the_call() -> None:
    reactor = MemoryReactorClock()
    connection, server = start(reactor)
    connection.observer = lambda *_: 1 / 0
    with capturedLogs() as events:
        results = run(connection.execute("PING"))
        server.reply(b"+PONG\r\n")
    assert results == [b"PONG"]
    assert any("log_failure" in e for e in events)


def test_metrics_redis_observers() -> None:
    metrics = Metrics(process_metrics=False)
    registry, bus = metrics.redis_observer("registry"), metrics.redis_observer("bus")
    registry("register", 0.0004, True)
    registry("register", 1.0, False)
    bus("PUBLISH", 0.00005, True)
    bus("publish_to_user_nodes", 0.02, False)
    assert value(metrics, "caas_registry_op_seconds_bucket", op="register", le="0.0005") == 1
    assert value(metrics, "caas_registry_op_seconds_count", op="register") == 2
    assert value(metrics, "caas_registry_op_failures_total", op="register") == 1
    assert value(metrics, "caas_bus_publish_seconds_bucket", le="0.0001") == 1
    assert value(metrics, "caas_bus_publish_seconds_count") == 2
    assert value(metrics, "caas_bus_publish_failures_total") == 1
    with pytest.raises(ValueError, match="unknown Redis connection kind"):
        metrics.redis_observer("cache")


def test_each_metrics_has_its_own_registry() -> None:
    one, two = observed(), observed()
    one[1]({"event": "lease_lost"})
    assert value(one[0], "caas_lease_lost_total") == 1
    assert value(two[0], "caas_lease_lost_total") == 0
    assert "python_info" in {f.name for f in Metrics().registry.collect()}


# -- JSON and text logs ------------------------------------------------------------------


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_with_fields_and_tracebacks() -> None:
    out = io.StringIO()
    observer = json_observer(out, environ={})
    assert ILogObserver.providedBy(observer)
    log = Logger(namespace="caas_socket.test", observer=observer)
    log.info("socket {socket_id} {state}", socket_id="abc", state="connected", event="socket_state")
    log.debug("dropped by default")
    try:
        raise KeyError("missing")
    except KeyError:
        log.failure("handler failed for {sid}", sid="s1")
    first, second = lines(out)
    assert first["message"] == "socket abc connected"
    assert (first["level"], first["namespace"]) == ("info", "caas_socket.test")
    assert first["event"] == "socket_state" and first["socket_id"] == "abc"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert not any(key.startswith("log_") for key in first)
    assert second["level"] == "critical" and second["sid"] == "s1"
    assert "KeyError: 'missing'" in second["traceback"]


def test_json_lines_survive_anything() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no")

    loop: list[Any] = []
    loop.append(loop)
    out = io.StringIO()
    log = Logger(namespace="t", observer=json_observer(out, environ={}))
    log.info("odd values", obj=object(), raw=b"\xff", nan=math.nan, keys={(1, 2): 3},
             loop=loop, bad=Unprintable(), namespace="shadowed", when={1, 2})  # fmt: skip
    log.info("{missing} format field")
    (odd, missing) = lines(out)
    assert odd["namespace"] == "t" and odd["field_namespace"] == "shadowed"
    assert odd["nan"] == "nan" and odd["raw"] == "b'\\xff'"
    assert odd["bad"] == "<unprintable Unprintable>"
    assert "Unable to format" in missing["message"]


@pytest.mark.parametrize(
    ("spec", "kept"),
    [
        ("", ["info", "noisy:info", "warn", "error"]),
        ("debug", ["debug", "noisy:debug", "info", "noisy:info", "warn", "error"]),
        ("WARNING", ["warn", "error"]),
        ("error,noisy=debug", ["error", "noisy:debug", "noisy:info"]),
        ("info,noisy=error", ["info", "warn", "error"]),
    ],
)
def test_the_level_filter(spec: str, kept: list[str]) -> None:
    out = io.StringIO()
    observer = json_observer(out, environ={"CAAS_LOG_LEVEL": spec} if spec else {})
    Logger(namespace="app", observer=observer).debug("debug")
    Logger(namespace="noisy.sub", observer=observer).debug("noisy:debug")
    Logger(namespace="noisy.sub", observer=observer).info("noisy:info")
    log = Logger(namespace="app", observer=observer)
    log.info("info")
    log.warn("warn")
    log.error("error")
    assert sorted(e["message"] for e in lines(out)) == sorted(kept)


@pytest.mark.parametrize("spec", ["verbose", "info,autobahn", "info,=warn"])
def test_a_bad_level_stops_the_start(spec: str) -> None:
    with pytest.raises(ValueError, match="CAAS_LOG_LEVEL"):
        LevelFilter(spec)


def test_text_lines_and_the_journal_priority(tmp_path: Any) -> None:
    out = io.StringIO()
    log = Logger(namespace="caas", observer=text_observer(out, environ={}))
    log.info("hello {who}", who="world")
    log.debug("hidden")
    assert out.getvalue().count("\n") == 1 and "[caas#info] hello world" in out.getvalue()
    with open(tmp_path / "journal", "w") as journal:
        st = os.fstat(journal.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        Logger(namespace="caas", observer=json_observer(journal, environ=env)).warn("careful")
        Logger(namespace="caas", observer=text_observer(journal, environ=env)).error("a\nb")
    written = (tmp_path / "journal").read_text().splitlines()
    assert written[0].startswith("<4>{") and json.loads(written[0][3:])["message"] == "careful"
    assert written[1].startswith("<3>") and written[2] == "<3>\tb"


def test_twistd_calls_the_factories_without_arguments(monkeypatch: Any) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setenv("CAAS_LOG_LEVEL", "warn")
    Logger(observer=json_observer()).info("dropped")
    Logger(observer=json_observer()).error("kept")
    assert [e["message"] for e in lines(out)] == ["kept"]
