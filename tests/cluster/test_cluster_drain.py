"""SIGTERM: a node hands its clients to the others without anyone seeing them go offline."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.cluster.conftest import DRAIN, FAST_RECONNECT, GRACE, PRESENCE_SWEEP

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster


@pytest_twisted.ensureDeferred
async def test_sigterm_moves_clients_to_the_other_node_and_presence_stays_online(
    cluster: Cluster,
):
    a, b = await cluster.start("a", "b")
    users = [f"u{i}" for i in range(4)]
    for user in users:
        await cluster.connected(user, cluster.balancer.url, user, "phone", **FAST_RECONNECT)
    await cluster.connected("watch", b.url, "watcher", "w")
    ref = cluster.sio.emit("watch", "presence:subscribe", {"userIds": users}, ack=True)
    assert await cluster.sio.ack("watch", ref) == [{"subscribed": 4}]
    on_a = [u for u in users if cluster.devices("t1", u)["phone"]["serverId"] == "a"]
    assert len(on_a) == 2  # round-robin
    old_sids = {u: cluster.sid(u) for u in on_a}
    presence_before = len(cluster.sio.seen("watch", "presence"))

    a.terminate()
    terminated = time.monotonic()
    for user in on_a:
        gone = await cluster.sio.wait_for(user, "disconnect", DRAIN + 1.0)
        assert gone["reason"] == "transport close"
        assert gone["active"] is True
        back = await cluster.sio.wait_for(user, "connect", DRAIN + 1.0)
        assert back["received"] - terminated <= DRAIN
        entry = cluster.devices("t1", user)["phone"]
        assert entry["serverId"] == "b"
        assert entry["socketId"] == back["sid"] != old_sids[user]
    # The node stops by itself once drained, cleanly (twistd re-raises SIGTERM on the way out).
    assert await deferToThread(a.wait, DRAIN + 5.0) in (0, -signal.SIGTERM)
    await a.log_match(r"node a stopped", 1.0)
    assert a.find(r"Server Shut Down")
    assert a.port in cluster.balancer.refused  # a reconnect knocked on A first, and moved on

    # No "offline" while they moved, nor after the grace has long passed.
    def never_offline() -> None:
        changes = cluster.sio.seen("watch", "presence")[presence_before:]
        offline = [c["args"][0] for c in changes if c["args"][0]["status"] == "offline"]
        assert not offline, offline

    await cluster.always(never_offline, GRACE + PRESENCE_SWEEP + 2.0)
    all_clients = [*users, "watch"]
    assert cluster.registry_sids() == cluster.live_sids(all_clients)
    assert cluster.node_sockets("a") == set()
    assert cluster.command("HGET", "caas:nodes", "a") is None
    for user in users:
        assert len(cluster.sio.seen(user, "disconnect")) == (1 if user in on_a else 0)

    # The watcher would have seen it: a user who really leaves goes offline.
    cluster.sio.disconnect(on_a[0])
    await cluster.presence_change("watch", on_a[0], "offline", GRACE + PRESENCE_SWEEP + 2.0)
