"""The health endpoint over real TCP: probes, status codes, and a parsable /metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.web.client import Agent, HTTPConnectionPool

from caas_socket.observability import Metrics, MetricsObserver, ServiceView, build_health_site
from tests.support.fakes import new_server, open_client
from tests.support.http import BodyCollector

TIMEOUT = 5.0


class Endpoint:
    """A health site listening on 127.0.0.1:<free port>, and a client for it."""

    def __init__(self) -> None:
        self.checks = {"accepting": True, "lease": True, "registry": True, "bus": True}
        self.metrics = Metrics(process_metrics=False)
        self.server, self.clock = new_server(Clock())
        self.service = SimpleNamespace(
            socket_server=self.server,
            readiness=lambda: self.checks,
            local=SimpleNamespace(registered={}),
        )
        self.metrics.watch(ServiceView(self.service))
        self.log = Logger(observer=MetricsObserver(self.metrics))
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        self.port: Any = None

    async def start(self) -> None:
        site = build_health_site(self.service.readiness, self.metrics, reactor=reactor)
        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        self.port = await endpoint.listen(site)

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
        await self.pool.closeCachedConnections()

    async def request(self, path: str, method: bytes = b"GET") -> tuple[int, dict[str, Any], bytes]:
        url = f"http://127.0.0.1:{self.port.getHost().port}{path}".encode()
        d = self.agent.request(method, url)
        d.addTimeout(TIMEOUT, reactor)
        response = await d
        body = BodyCollector()
        response.deliverBody(body)
        body.done.addTimeout(TIMEOUT, reactor)
        headers = {
            k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()
        }
        return response.code, headers, await body.done


@pytest_twisted.async_yield_fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    node = Endpoint()
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@pytest_twisted.ensureDeferred
async def test_healthz_answers_while_the_process_runs(endpoint: Endpoint) -> None:
    code, headers, body = await endpoint.request("/healthz")
    assert (code, json.loads(body)) == (200, {"status": "alive"})
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"


@pytest_twisted.ensureDeferred
async def test_readyz_follows_the_readiness_conditions(endpoint: Endpoint) -> None:
    code, _, body = await endpoint.request("/readyz")
    assert code == 200
    assert json.loads(body) == {"ready": True, "checks": endpoint.checks}
    endpoint.checks["bus"] = False
    code, _, body = await endpoint.request("/readyz")
    assert code == 503
    assert json.loads(body) == {"ready": False, "checks": {**endpoint.checks, "bus": False}}
    endpoint.checks["bus"] = True
    assert (await endpoint.request("/readyz"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_methods_get_json_errors(endpoint: Endpoint) -> None:
    code, headers, body = await endpoint.request("/nope")
    assert (code, json.loads(body)) == (404, {"error": "not_found"})
    assert headers["content-type"] == "application/json"
    code, headers, body = await endpoint.request("/readyz", b"POST")
    assert (code, json.loads(body)) == (405, {"error": "method_not_allowed"})
    assert headers["allow"] == "GET, HEAD"
    code, _, body = await endpoint.request("/healthz", b"HEAD")
    assert (code, body) == (200, b"")


@pytest_twisted.ensureDeferred
async def test_metrics_parse_and_count_what_happened(endpoint: Endpoint) -> None:
    log = endpoint.log
    log.info("x", event="socket_state", state="connected")
    log.info("x", event="socket_state", state="connected")
    log.info("x", event="auth_failed", code="expired")
    log.warn("x", event="node_reaped", dead="n2", count=3)
    endpoint.metrics.redis_observer("registry")("register", 0.0015, True)
    client, _ = open_client(endpoint.server)
    client.receive("40", '42["hello"]')
    endpoint.checks["lease"] = False

    code, headers, body = await endpoint.request("/metrics")
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("caas_connects_total", (("result", "accepted"),))] == 2
    assert samples[("caas_auth_failures_total", (("code", "expired"),))] == 1
    assert samples[("caas_nodes_reaped_total", ())] == 1
    assert samples[("caas_reaped_entries_total", ())] == 3
    assert samples[("caas_log_events_total", (("level", "warn"),))] == 1
    assert samples[("caas_registry_op_seconds_count", (("op", "register"),))] == 1
    assert samples[("caas_registry_op_seconds_bucket", (("le", "0.0025"), ("op", "register")))] == 1
    assert samples[("caas_sockets", (("state", "connected"),))] == 1
    assert samples[("caas_engine_sessions", ())] == 1
    assert samples[("caas_packets_in_total", ())] == 2
    assert samples[("caas_packets_out_total", ())] == 1
    assert samples[("caas_ready", ())] == 0
    assert samples[("caas_ready_condition", (("condition", "lease"),))] == 0
    assert samples[("caas_ready_condition", (("condition", "bus"),))] == 1
    assert all(name.startswith("caas_") for name, _ in samples)


@pytest_twisted.ensureDeferred
async def test_a_failing_readiness_check_means_not_ready(endpoint: Endpoint) -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("registry object gone")

    endpoint.service.readiness = broken
    site = build_health_site(broken, endpoint.metrics, reactor=reactor)
    await endpoint.port.stopListening()
    endpoint.port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    with capturedLogs() as events:
        code, _, body = await endpoint.request("/readyz")
    assert code == 503
    assert json.loads(body) == {"ready": False, "checks": {}, "error": "check_failed"}
    assert any(e.get("log_failure") is not None for e in events)
    assert (await endpoint.request("/healthz"))[0] == 200  # alive, only not ready
