"""End to end: the API of ONE node reaches devices on BOTH nodes, never another tenant's.

Two nodes share a real Redis; the official socket.io-client connects devices
to both; every call goes to the API of node n1 only.
"""

from __future__ import annotations

import pytest_twisted

from tests.api.client import T1_KEY, ApiClient, sleep
from tests.api.inprocess import ApiCluster, ApiNode

#: How long to watch for deliveries that must not happen, once the wanted ones arrived.
QUIET = 0.7
FAST_RECONNECT = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}
T1 = "/v1/tenants/t1"


async def _two_nodes(cluster: ApiCluster) -> tuple[ApiNode, ApiNode]:
    n1, n2 = await cluster.start("n1", "n2")
    return n1, n2


def _got(cluster: ApiCluster, client: str, event: str) -> list[list[object]]:
    return [e["args"] for e in cluster.sio.seen(client, event)]


@pytest_twisted.ensureDeferred
async def test_emit_to_a_user_a_device_and_a_room_reaches_both_nodes(
    api_cluster: ApiCluster,
) -> None:
    n1, n2 = await _two_nodes(api_cluster)
    clients = {
        "alice-1": (n1, "alice", "a1", "t1"),
        "alice-2": (n2, "alice", "a2", "t1"),
        "bob-2": (n2, "bob", "b1", "t1"),
        "twin-2": (n2, "alice", "a1", "t2"),  # the same ids in another tenant
    }
    for client, (node, user, device, tenant) in clients.items():
        await api_cluster.connected(client, node, user, device, tenant)
    api = n1.api
    sio = api_cluster.sio

    assert (
        await api.post(f"{T1}/users/alice/emit", {"event": "msg", "data": {"n": 1}})
    ).status == 202
    for client in ("alice-1", "alice-2"):
        assert (await sio.wait_for(client, "msg"))["args"] == [{"n": 1}]

    await api.post(f"{T1}/users/alice/devices/a2/emit", {"event": "one", "data": "d"})
    assert (await sio.wait_for("alice-2", "one"))["args"] == ["d"]

    # Alice joins as a user (her devices now and later), bob with one device.
    joined = await api.post(f"{T1}/users/alice/rooms", {"join": ["chat"]})
    assert joined.json == {"rooms": ["chat"]}
    await api.post(f"{T1}/users/bob/rooms", {"join": ["chat"], "deviceId": "b1"})
    await api.post("/v1/tenants/t2/users/alice/rooms", {"join": ["chat"]})  # t2's own "chat"
    await api_cluster.connected("alice-3", n2, "alice", "a3")  # connects after the join
    await sleep(0.2)  # joins are applied by each node as the command arrives
    await api.post(f"{T1}/rooms/chat/emit", {"event": "room", "data": 1})
    for client in ("alice-1", "alice-2", "alice-3", "bob-2"):
        assert (await sio.wait_for(client, "room"))["args"] == [1]

    left = await api.post(f"{T1}/users/alice/rooms", {"leave": ["chat"]})
    assert left.json == {"rooms": []}
    assert (await api.get(f"{T1}/users/alice/rooms")).json == {"rooms": []}
    await sleep(0.2)
    await api.post(f"{T1}/rooms/chat/emit", {"event": "room", "data": 2})
    assert (await sio.wait_for("bob-2", "room"))["args"] == [2]
    await sleep(QUIET)

    assert _got(api_cluster, "alice-1", "msg") == [[{"n": 1}]]
    assert _got(api_cluster, "alice-1", "one") == []
    assert [_got(api_cluster, c, "room") for c in ("alice-1", "alice-2", "alice-3")] == [[[1]]] * 3
    for event in ("msg", "one", "room"):
        assert _got(api_cluster, "twin-2", event) == [], event
    assert _got(api_cluster, "bob-2", "msg") == []


@pytest_twisted.ensureDeferred
async def test_disconnect_stay_out_kicks_every_device_for_good(api_cluster: ApiCluster) -> None:
    n1, n2 = await _two_nodes(api_cluster)
    await api_cluster.connected("alice-1", n1, "alice", "a1", **FAST_RECONNECT)
    await api_cluster.connected("alice-2", n2, "alice", "a2", **FAST_RECONNECT)
    await api_cluster.connected("twin", n2, "alice", "a1", "t2", **FAST_RECONNECT)
    sio = api_cluster.sio
    reply = await n1.api.post(
        f"{T1}/users/alice/disconnect", {"reason": "banned", "mode": "stay-out"}
    )
    assert reply.status == 202
    for client in ("alice-1", "alice-2"):
        assert (await sio.wait_for(client, "caas:kicked"))["args"] == [{"reason": "banned"}]
        assert (await sio.wait_for(client, "disconnect"))["reason"] == "io server disconnect"
    await sleep(1.0)  # socket.io-client would be back within 200 ms if it were to come back
    for client in ("alice-1", "alice-2"):
        assert len(sio.seen(client, "connect")) == 1
        assert sio.seen(client, "reconnect_attempt") == []
    assert sio.seen("twin", "disconnect") == [] and sio.seen("twin", "caas:kicked") == []
    listed = await n1.api.get(f"{T1}/users/alice/connections")
    assert listed.json == {"connections": []}


@pytest_twisted.ensureDeferred
async def test_disconnect_reconnect_lets_clients_come_back(api_cluster: ApiCluster) -> None:
    n1, n2 = await _two_nodes(api_cluster)
    first = {
        "alice-1": await api_cluster.connected("alice-1", n1, "alice", "a1", **FAST_RECONNECT),
        "alice-2": await api_cluster.connected("alice-2", n2, "alice", "a2", **FAST_RECONNECT),
    }
    sio = api_cluster.sio
    await n1.api.post(f"{T1}/users/alice/disconnect", {"reason": "moved", "mode": "reconnect"})
    for client, sid in first.items():
        kicked = await sio.wait_for(client, "caas:kicked")
        assert kicked["args"] == [{"reason": "moved", "reconnect": True}]
        assert (await sio.wait_for(client, "disconnect"))["reason"] == "transport close"
        assert (await sio.wait_for(client, "connect"))["sid"] != sid


@pytest_twisted.ensureDeferred
async def test_disconnect_one_device(api_cluster: ApiCluster) -> None:
    n1, n2 = await _two_nodes(api_cluster)
    await api_cluster.connected("alice-1", n1, "alice", "a1")
    await api_cluster.connected("alice-2", n2, "alice", "a2")
    body = {"reason": "lost phone", "mode": "stay-out", "deviceId": "a2"}
    await n1.api.post(f"{T1}/users/alice/disconnect", body)
    await api_cluster.sio.wait_for("alice-2", "disconnect")
    await sleep(QUIET)
    assert api_cluster.sio.seen("alice-1", "disconnect") == []


@pytest_twisted.ensureDeferred
async def test_connections_and_presence_span_both_nodes(api_cluster: ApiCluster) -> None:
    n1, n2 = await _two_nodes(api_cluster)
    sids = {
        await api_cluster.connected("alice-1", n1, "alice", "a1"): ("a1", "n1"),
        await api_cluster.connected("alice-2", n2, "alice", "a2"): ("a2", "n2"),
    }
    await api_cluster.connected("twin", n2, "carol", "c1", "t2")
    listed = (await n1.api.get(f"{T1}/users/alice/connections")).json["connections"]
    assert {c["socketId"]: (c["deviceId"], c["serverId"]) for c in listed} == sids
    assert all(c["connectedAt"] <= c["lastActivity"] for c in listed)
    # carol lives in t2 only: t1's path knows nothing of her.
    assert (await n1.api.get(f"{T1}/users/carol/connections")).json == {"connections": []}
    t2 = (await n1.api.get("/v1/tenants/t2/users/carol/connections")).json["connections"]
    assert [c["serverId"] for c in t2] == ["n2"]

    presence = await n1.api.post(f"{T1}/presence", {"userIds": ["alice", "carol"]})
    states = {s["userId"]: s for s in presence.json["presence"]}
    assert (states["alice"]["status"], sorted(states["alice"]["devices"])) == (
        "online",
        ["a1", "a2"],
    )
    assert states["carol"]["status"] == "offline"  # online in t2 only


@pytest_twisted.ensureDeferred
async def test_a_tenant_scoped_key_cannot_reach_another_tenant(api_cluster: ApiCluster) -> None:
    n1, n2 = await _two_nodes(api_cluster)
    await api_cluster.connected("t1-alice", n2, "alice", "a1", "t1")
    await api_cluster.connected("t2-alice", n2, "alice", "a1", "t2")
    scoped = ApiClient(n1.api.base, T1_KEY)
    try:
        t2 = "/v1/tenants/t2/users/alice"
        refused = [
            await scoped.post(f"{t2}/emit", {"event": "msg"}),
            await scoped.post(f"{t2}/disconnect", {"reason": "x", "mode": "stay-out"}),
            await scoped.post(f"{t2}/rooms", {"join": ["r"]}),
            await scoped.get(f"{t2}/connections"),
        ]
        assert [(r.status, r.code) for r in refused] == [(403, "forbidden")] * 4
        assert (await scoped.post(f"{T1}/users/alice/emit", {"event": "msg"})).status == 202
        await api_cluster.sio.wait_for("t1-alice", "msg")
        await sleep(QUIET)
        assert api_cluster.sio.seen("t2-alice", ("msg", "disconnect")) == []
        assert (await n1.api.get(f"{t2}/rooms")).json == {"rooms": []}
    finally:
        await scoped.close()


@pytest_twisted.ensureDeferred
async def test_redis_unavailable_is_503(api_cluster: ApiCluster) -> None:
    (n1,) = await api_cluster.start("n1")
    api_cluster.redis.pause()
    try:
        replies = [
            await n1.api.post(f"{T1}/users/alice/emit", {"event": "msg"}),
            await n1.api.get(f"{T1}/users/alice/connections"),
            await n1.api.post(f"{T1}/presence", {"userIds": ["alice"]}),
        ]
    finally:
        api_cluster.redis.resume()
    assert [(r.status, r.code) for r in replies] == [(503, "unavailable")] * 3
