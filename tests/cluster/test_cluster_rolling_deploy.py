"""A rolling deploy: three nodes restarted one by one while their clients stay connected somewhere.

This is what an operator does with ``systemctl restart caas-socket@N`` node
after node (docs/DEPLOY.rst): SIGTERM drains the node, its clients reconnect
through the balancer to the others, the node comes back under the same id.
Throughout, no user goes offline for a presence watcher, and afterwards the
registry holds exactly the live connections and a ``sync`` still reaches
every other device of its user.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.cluster.conftest import DRAIN, FAST_RECONNECT, GRACE, PRESENCE_SWEEP

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

NODES = ("a", "b", "c")
USERS = [f"u{i}" for i in range(6)]
DEVICES = ("phone", "laptop")


def client(user: str, device: str) -> str:
    return f"{user}-{device}"


CLIENTS = [client(u, d) for u in USERS for d in DEVICES]


@pytest_twisted.ensureDeferred
async def test_nodes_restarted_one_by_one_keep_every_client_connected_and_online(
    cluster: Cluster,
) -> None:
    nodes = dict(zip(NODES, await cluster.start(*NODES), strict=True))
    for name in CLIENTS:
        user, device = name.split("-")
        await cluster.connected(name, cluster.balancer.url, user, device, **FAST_RECONNECT)
    assert {cluster.devices("t1", u)["phone"]["serverId"] for u in USERS} == set(NODES)

    for step, name in enumerate(NODES):
        # A watcher on a node that stays up during this step sees every presence change.
        host = nodes[NODES[(step + 1) % len(NODES)]]
        watcher = f"watch-{name}"
        await cluster.connected(watcher, host.url, "watcher", f"w-{name}")
        ref = cluster.sio.emit(watcher, "presence:subscribe", {"userIds": USERS}, ack=True)
        assert await cluster.sio.ack(watcher, ref) == [{"subscribed": len(USERS)}]

        old = nodes[name]
        moving = [c for c in CLIENTS if cluster.sid(c) in cluster.node_sockets(name)]
        assert moving, f"no client on node {name} to move"
        old.terminate()
        for moved in moving:
            gone = await cluster.sio.wait_for(moved, "disconnect", DRAIN + 2.0)
            assert gone["reason"] == "transport close" and gone["active"] is True
            await cluster.sio.wait_for(moved, "connect", DRAIN + 2.0)
        assert await deferToThread(old.wait, DRAIN + 5.0) in (0, -signal.SIGTERM)
        cluster.balancer.remove(old.port)  # type: ignore[arg-type]
        (nodes[name],) = await cluster.start(name)  # the same id, as systemd restarts it

        def never_offline(watcher: str = watcher) -> None:
            offline = [c for c in cluster.presence_changes(watcher) if c["status"] == "offline"]
            assert not offline, offline

        await cluster.always(never_offline, GRACE + PRESENCE_SWEEP + 1.0)
        cluster.sio.disconnect(watcher)

    def one_entry_per_live_connection() -> None:
        live = cluster.live_sids(CLIENTS)
        assert len(live) == len(CLIENTS)
        assert cluster.registry_sids() == live
        by_node = set().union(*(cluster.node_sockets(n) for n in NODES))
        assert by_node == live

    await cluster.eventually(one_entry_per_live_connection, 5.0)
    for user in USERS:
        cluster.sio.emit(client(user, "phone"), "sync", {"from": user})
    for user in USERS:
        got = await cluster.sio.wait_for(client(user, "laptop"), "sync", 5.0)
        assert got["args"] == [{"from": user}]
