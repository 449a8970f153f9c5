"""``--health-listen``: /readyz follows Redis, /metrics counts what the clients did."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from tests.support.http import BodyCollector

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

#: Redis calls time out after 1 s, the bus probe is checked every 2 s, reconnects back off to 2 s.
NOT_READY_WITHIN = 6.0
READY_AGAIN_WITHIN = 8.0


async def _get(url: str) -> tuple[int, bytes]:
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    response = await agent.request(b"GET", url.encode())
    body = BodyCollector()
    response.deliverBody(body)
    return response.code, await body.done.addTimeout(5.0, reactor)


async def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    code, body = await _get(url + "/readyz")
    return code, json.loads(body)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest_twisted.ensureDeferred
async def test_readyz_follows_redis(cluster: Cluster):
    a, _ = await cluster.start("a", "b")
    url = a.health_url

    async def answers(expected: int) -> dict[str, Any]:
        code, body = await _readyz(url)
        assert code == expected, (code, body)
        return body

    # Ready once its own bus probe came back, a moment after it subscribed.
    body = await cluster.eventually(lambda: answers(200), 2.0, interval=0.05)
    assert body["ready"] is True
    assert body["checks"] and all(body["checks"].values())

    cluster.redis.stop()
    body = await cluster.eventually(lambda: answers(503), NOT_READY_WITHIN, interval=0.2)
    assert body["ready"] is False
    assert not all(body["checks"].values())
    assert body["checks"]["accepting"] is True
    assert (await _get(url + "/healthz"))[0] == 200  # alive all the same

    cluster.redis.start()
    body = await cluster.eventually(lambda: answers(200), READY_AGAIN_WITHIN, interval=0.2)
    assert body["ready"] is True
    assert all(body["checks"].values())


@pytest_twisted.ensureDeferred
async def test_metrics_count_the_connects_of_the_test(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    for i in range(3):
        await cluster.connected(f"ok{i}", a.url, f"user{i}", "d")
    for client_id, token in (("bad", "not.a.jwt"), ("forged", cluster.mint("x", key="k" * 40))):
        cluster.connect(client_id, a.url, "x", "d", token=token)
        refused = await cluster.sio.wait_for(client_id, ("connect", "connect_error"), 5.0)
        assert refused["type"] == "connect_error"

    code, body = await _get(a.health_url + "/metrics")
    assert code == 200
    samples = _samples(body.decode())
    assert samples[("caas_connects_total", frozenset({("result", "accepted")}))] == 3
    assert samples[("caas_connects_total", frozenset({("result", "refused")}))] == 2
    assert samples[("caas_auth_failures_total", frozenset({("code", "malformed_token")}))] == 1
    assert samples[("caas_auth_failures_total", frozenset({("code", "invalid_signature")}))] == 1
    # The other node saw none of it.
    code, body = await _get(b.health_url + "/metrics")
    other = _samples(body.decode())
    assert other.get(("caas_connects_total", frozenset({("result", "accepted")})), 0) == 0
