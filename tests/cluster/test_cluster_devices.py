"""Device limits and replacement across nodes: the registry in Redis is the single truth."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest_twisted

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

QUIET = 0.5


@pytest_twisted.ensureDeferred
async def test_concurrent_connects_over_three_nodes_admit_exactly_the_limit(cluster: Cluster):
    nodes = await cluster.start("n1", "n2", "n3", args=("--max-devices", "5"))
    token = cluster.mint("racer")
    ids = [f"c{i}" for i in range(20)]
    for i, client_id in enumerate(ids):
        cluster.connect(client_id, nodes[i % 3].url, "racer", f"dev-{i}", token=token)
    outcomes = {c: await cluster.sio.wait_for(c, ("connect", "connect_error"), 8.0) for c in ids}

    accepted = {c: e["sid"] for c, e in outcomes.items() if e["type"] == "connect"}
    refused = [e for e in outcomes.values() if e["type"] == "connect_error"]
    assert len(accepted) == 5, outcomes
    assert len(refused) == 15
    for event in refused:
        assert event["message"] == "Device limit reached"
        assert event["data"] == {"code": "device_limit", "maxDevices": 5}
        assert event["active"] is False  # socket.io-client does not retry
    key = cluster.user_key("t1", "racer")
    assert cluster.command("HLEN", key) == 5
    devices = cluster.devices("t1", "racer")
    assert {e["socketId"] for e in devices.values()} == set(accepted.values())
    for device, entry in devices.items():
        assert entry["deviceId"] == device
        assert entry["serverId"] in ("n1", "n2", "n3")
    # Nothing else moves afterwards: no late registration, no kick.
    await cluster.sleep(QUIET)
    assert cluster.command("HLEN", key) == 5
    assert not cluster.sio.seen(None, ("disconnect", "caas:kicked"))


@pytest_twisted.ensureDeferred
async def test_evict_oldest_kicks_the_oldest_device_on_another_node(cluster: Cluster):
    a, b = await cluster.start(
        "a", "b", args=("--max-devices", "2", "--device-limit-policy", "evict-oldest")
    )
    oldest = await cluster.connected("oldest", a.url, "eve", "d1")
    await cluster.sleep(0.05)  # connectedAt is in ms: keep the order unambiguous
    middle = await cluster.connected("middle", a.url, "eve", "d2")
    await cluster.sleep(0.05)
    newest = await cluster.connected("newest", b.url, "eve", "d3")

    kicked = await cluster.sio.wait_for("oldest", "caas:kicked", 3.0)
    assert kicked["args"] == [{"reason": "evicted"}]
    gone = await cluster.sio.wait_for("oldest", "disconnect", 3.0)
    assert gone["reason"] == "io server disconnect"
    assert gone["active"] is False
    await a.log_match(rf"kicking socket {oldest}: evicted")

    devices = cluster.devices("t1", "eve")
    assert {d: e["socketId"] for d, e in devices.items()} == {"d2": middle, "d3": newest}
    await cluster.sio.quiet(None, ("connect", "disconnect", "caas:kicked"), QUIET)
    # The survivors still work, across the nodes.
    cluster.sio.emit("newest", "sync", "hi")
    assert (await cluster.sio.wait_for("middle", "sync", 3.0))["args"] == ["hi"]
    assert cluster.node_sockets("a") == {middle}
    assert cluster.node_sockets("b") == {newest}


@pytest_twisted.ensureDeferred
async def test_same_device_on_another_node_replaces_the_old_connection(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    old = await cluster.connected("old", a.url, "rita", "phone")
    assert cluster.devices("t1", "rita")["phone"]["socketId"] == old
    new = await cluster.connected("new", b.url, "rita", "phone")

    kicked = await cluster.sio.wait_for("old", "caas:kicked", 3.0)
    assert kicked["args"] == [{"reason": "replaced"}]
    gone = await cluster.sio.wait_for("old", "disconnect", 3.0)
    assert gone["reason"] == "io server disconnect"
    assert gone["active"] is False
    await a.log_match(rf"kicking socket {old}: replaced")

    raw = cluster.command("HGET", cluster.user_key("t1", "rita"), "phone")
    entry = json.loads(raw)
    assert entry["socketId"] == new
    assert entry["serverId"] == "b"
    assert cluster.command("HLEN", cluster.user_key("t1", "rita")) == 1
    # The old connection's late unregister did not take the new entry with it.
    await cluster.sleep(QUIET)
    assert cluster.registry_sids() == {new}
    assert cluster.node_sockets("a") == set()
    cluster.sio.emit("new", "heartbeat")
    await cluster.sio.wait_for("new", "heartbeat", 3.0)
    assert not cluster.sio.seen("new", "disconnect")
