"""Nodes that die or hang: their entries are reaped, and a reaped node cannot bring them back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest_twisted

from tests.cluster.conftest import FAST_RECONNECT, LEASE_TTL

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

#: docs/REDIS.rst and --help: a dead node is reaped within about 1.25 x the lease TTL.
REAP_BOUND = 1.25 * LEASE_TTL
#: Scheduling, Redis round trips and the log reader thread.
SLACK = 1.0


@pytest_twisted.ensureDeferred
async def test_killed_node_is_reaped_within_the_documented_bound(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    on_a = [
        await cluster.connected(f"a{i}", a.url, f"user{i}", "d", reconnection=False)
        for i in range(3)
    ]
    on_b = await cluster.connected("b0", b.url, "user0", "other")
    assert cluster.node_sockets("a") == set(on_a)
    assert cluster.registry_sids() == {*on_a, on_b}
    since = b.mark()

    a.kill()
    killed = time.monotonic()
    # The lease still runs for at least 2/3 of its TTL: nobody reaps a live lease.
    await cluster.sleep(0.5)
    assert cluster.node_sockets("a") == set(on_a)

    def reaped() -> None:
        assert cluster.registry_sids() == {on_b}
        assert cluster.node_sockets("a") == set()

    await cluster.eventually(reaped, REAP_BOUND + SLACK, interval=0.05)
    elapsed = time.monotonic() - killed
    assert elapsed <= REAP_BOUND + SLACK
    await b.log_match(r"reaped dead node a: 3 entries removed", 2.0, since=since)
    assert cluster.command("HGET", "caas:nodes", "a") is None
    assert cluster.command("EXISTS", "caas:reaped:a") == 1
    assert set(cluster.devices("t1", "user0")) == {"other"}
    for client_id in ("a0", "a1", "a2"):
        assert (await cluster.sio.wait_for(client_id, "disconnect", 1.0))["reason"] == (
            "transport close"
        )


@pytest_twisted.ensureDeferred
async def test_node_paused_past_its_lease_cannot_resurrect_its_entries(cluster: Cluster):
    # Long pings (the default): the clients do not notice the pause by themselves.
    a, b = await cluster.start("a", "b")
    ids = [f"c{i}" for i in range(4)]
    for i, client_id in enumerate(ids):
        await cluster.connected(client_id, cluster.balancer.url, f"user{i}", "d", **FAST_RECONNECT)
    entries = {e["socketId"]: e for e in cluster.entries()}
    assert set(entries) == cluster.live_sids(ids)
    old_on_a = {sid for sid, e in entries.items() if e["serverId"] == "a"}
    clients_on_a = [c for c in ids if cluster.sid(c) in old_on_a]
    clients_on_b = [c for c in ids if c not in clients_on_a]
    assert len(clients_on_a) == 2, entries  # round-robin

    since_b = b.mark()
    a.pause()
    try:
        await b.log_match(r"reaped dead node a: 2 entries removed", REAP_BOUND + 2.0, since_b)
        assert cluster.node_sockets("a") == set()
        assert cluster.registry_sids() == cluster.live_sids(clients_on_b)
        since_a = a.mark()
    finally:
        a.resume()
    resumed = time.monotonic()
    await a.log_match(r"was reaped as dead by another node", 3.0, since_a)

    # Its clients were closed at the transport, reconnected through the balancer, anywhere.
    for client_id in clients_on_a:
        gone = await cluster.sio.wait_for(client_id, "disconnect", 3.0)
        assert gone["reason"] == "transport close"
        assert gone["active"] is True
        await cluster.sio.wait_for(client_id, "connect", 3.0)

    def registry_is_the_live_connections() -> None:
        live = cluster.live_sids(ids)
        assert len(live) == len(ids)
        assert cluster.registry_sids() == live

    await cluster.eventually(registry_is_the_live_connections, 3.0)
    # A few seconds after the resume, nothing of the old node came back.
    await cluster.always(
        registry_is_the_live_connections, max(0.0, resumed + 3.0 - time.monotonic())
    )
    assert not old_on_a & cluster.registry_sids()
    assert not old_on_a & (cluster.node_sockets("a") | cluster.node_sockets("b"))
    for client_id in clients_on_b:
        assert not cluster.sio.seen(client_id, "disconnect")
    for i, client_id in enumerate(ids):
        assert cluster.devices("t1", f"user{i}")["d"]["socketId"] == cluster.sid(client_id)
