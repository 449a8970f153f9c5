"""Redis lost and found again: the registry converges back to exactly the live connections."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_twisted

from tests.cluster.conftest import LEASE_TTL

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

#: Pool and bus reconnect within 2 s (their backoff cap), the lease is renewed every ttl/3.
CONVERGE = 6.0


@pytest_twisted.ensureDeferred
async def test_registry_converges_after_redis_restarts_empty(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    clients = {
        "u-a": (a, "u", "d1"),
        "u-b": (b, "u", "d2"),
        "v-a": (a, "v", "d1"),
        "w-b": (b, "w", "d1"),
    }
    for client_id, (node, user, device) in clients.items():
        await cluster.connected(client_id, node.url, user, device)
    ids = list(clients)
    assert cluster.registry_sids() == cluster.live_sids(ids)
    marks = {node: node.mark() for node in (a, b)}

    cluster.redis.restart()  # stopped, and back empty

    def converged() -> None:
        assert cluster.registry_sids() == cluster.live_sids(ids)
        assert cluster.node_sockets("a") == {cluster.sid("u-a"), cluster.sid("v-a")}
        assert cluster.node_sockets("b") == {cluster.sid("u-b"), cluster.sid("w-b")}

    await cluster.eventually(converged, CONVERGE)
    for node in (a, b):
        await node.log_match(r"lease of node \S+ had vanished", 1.0, marks[node])
        await node.log_match(r"registry reconciled: 2 live", 1.0, marks[node])
        await node.log_match(
            r"bus subscribed to caas:bus:\S+ \(subscription 2\)", CONVERGE, marks[node]
        )
    # Nobody noticed: no client was disconnected.
    assert not cluster.sio.seen(None, "disconnect")
    # The bus works again, both ways.
    cluster.sio.emit("u-a", "sync", "a->b")
    assert (await cluster.sio.wait_for("u-b", "sync", 3.0))["args"] == ["a->b"]
    cluster.sio.emit("u-b", "sync", "b->a")
    assert (await cluster.sio.wait_for("u-a", "sync", 3.0))["args"] == ["b->a"]
    await cluster.always(converged, 1.0)


@pytest_twisted.ensureDeferred
async def test_node_started_while_redis_is_down_serves_and_registers_later(cluster: Cluster):
    cluster.redis.stop()
    (a,) = await cluster.start("a", ready=(r"node \S+ started",))
    # Fail open: clients are served without a registry.
    s1 = await cluster.connected("c1", a.url, "u", "d1")
    s2 = await cluster.connected("c2", a.url, "u", "d2")
    cluster.sio.emit("c1", "heartbeat")
    assert (await cluster.sio.wait_for("c1", "heartbeat", 3.0))["args"][0]["serverTime"] > 0
    cluster.sio.emit("c1", "sync", "local")
    assert (await cluster.sio.wait_for("c2", "sync", 3.0))["args"] == ["local"]
    since = a.mark()

    cluster.redis.start()

    def registered() -> None:
        assert cluster.registry_sids() == {s1, s2}
        assert cluster.node_sockets("a") == {s1, s2}
        assert set(cluster.devices("t1", "u")) == {"d1", "d2"}

    await cluster.eventually(registered, CONVERGE)
    await a.log_match(r"node a holds its lease", 1.0, since)
    await a.log_match(r"registry reconciled: 2 live", 1.0, since)
    # The late node hears the cluster: a device on another node reaches both.
    await a.log_match(r"bus subscribed to caas:bus:a", CONVERGE)
    (b,) = await cluster.start("b")
    s3 = await cluster.connected("c3", b.url, "u", "d3")
    cluster.sio.emit("c3", "sync", "from b")
    for client_id in ("c1", "c2"):
        assert (await cluster.sio.wait_for(client_id, "sync", 3.0))["args"] == ["from b"]
    assert cluster.registry_sids() == {s1, s2, s3}
    assert not cluster.sio.seen(None, "disconnect")


@pytest_twisted.ensureDeferred
async def test_redis_pause_longer_than_the_lease_does_not_get_live_nodes_reaped(cluster: Cluster):
    """Leases that lapsed because Redis itself was away are no proof that a node died.

    Every lease expires while Redis is paused.  Node b is still stopped for a
    moment when Redis comes back (as a node busy with its own reconnects can
    be), but renews well within one TTL after that: it must not be reaped,
    and its clients must not be disconnected.
    """
    a, b = await cluster.start("a", "b")
    ids = ["a0", "b0", "b1"]
    await cluster.connected("a0", a.url, "u0", "d")
    await cluster.connected("b0", b.url, "u1", "d")
    await cluster.connected("b1", b.url, "u2", "d")
    marks = {node: node.mark() for node in (a, b)}

    cluster.redis.pause()
    try:
        await cluster.sleep(LEASE_TTL + 0.5)  # every lease has lapsed by now
        b.pause()
        try:
            cluster.redis.resume()
            await cluster.sleep(1.0)  # well within one TTL of Redis being back
        finally:
            b.resume()
    finally:
        if cluster.redis.paused:
            cluster.redis.resume()

    await cluster.sleep(LEASE_TTL)  # b renewed (or learnt it was reaped) by now
    reaped = b.find(r"node b was reaped as dead by another node.*", marks[b])
    assert reaped is None, reaped[0]
    assert not cluster.sio.seen(None, "disconnect"), cluster.sio.describe()
    await b.log_match(r"lease of node b had vanished", 1.0, marks[b])
    await cluster.eventually(lambda: _same(cluster.registry_sids(), cluster.live_sids(ids)), 2.0)


@pytest_twisted.ensureDeferred
async def test_a_redis_outage_is_logged_once_not_once_per_tick(cluster: Cluster):
    """``BackendHealth``: the first failure of an episode is logged, then nothing until it ends."""
    a, b = await cluster.start("a", "b")
    await cluster.connected("c", a.url, "u", "d")
    await cluster.sleep(0.3)  # its presence is written: nothing is in flight
    marks = {node: node.mark() for node in (a, b)}
    cluster.redis.stop()
    await cluster.sleep(3.0)
    cluster.redis.start()
    for node in (a, b):
        await node.log_match(r"Redis available again", CONVERGE, marks[node])
    for node in (a, b):
        lines = node.lines[marks[node] :]
        assert len([line for line in lines if "Redis unavailable" in line]) == 1
        loud = [line for line in lines if "#critical]" in line or "#error]" in line]
        assert len(loud) == 1, "\n".join(loud)


def _same(left: set[str], right: set[str]) -> None:
    assert left == right, (left, right)
