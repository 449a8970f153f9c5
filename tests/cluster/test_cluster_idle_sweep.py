"""The idle sweep: silent clients are closed (answering pings does not count), busy ones stay."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest_twisted
from twisted.internet.defer import Deferred

from tests.cluster.conftest import FAST_PINGS, FAST_RECONNECT

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

IDLE = 2.0
SWEEP = 1.0
FLUSH = 0.5
SWEEP_ARGS = (
    "--idle-timeout",
    f"{IDLE}s",
    "--sweep-interval",
    f"{SWEEP}s",
    "--activity-flush-interval",
    f"{FLUSH}s",
    *FAST_PINGS,
)


async def _keep_busy(cluster: Cluster, client_ids: list[str], running: list[bool]) -> None:
    while running:
        for client_id in client_ids:
            cluster.sio.emit(client_id, "heartbeat")
        await cluster.sleep(0.4)


@pytest_twisted.ensureDeferred
async def test_idle_clients_are_closed_and_busy_ones_stay(cluster: Cluster):
    a, b = await cluster.start("a", "b", args=SWEEP_ARGS)
    busy, idle = ["busy-a", "busy-b"], ["idle-a", "idle-b"]
    for client_id, node in (("busy-a", a), ("busy-b", b), ("idle-a", a), ("idle-b", b)):
        await cluster.connected(client_id, node.url, client_id, "d", **FAST_RECONNECT)
    first_sids = {c: cluster.sid(c) for c in idle}
    connected_at = {c: cluster.sio.seen(c, "connect")[0]["received"] for c in idle}
    running = [True]
    beating = Deferred.fromCoroutine(_keep_busy(cluster, busy, running))
    try:
        for client_id in idle:
            gone = await cluster.sio.wait_for(client_id, "disconnect", IDLE + SWEEP + 2.0)
            assert gone["reason"] == "transport close"
            assert gone["active"] is True  # it will reconnect, and start afresh
            assert IDLE - 0.2 <= gone["received"] - connected_at[client_id] <= IDLE + SWEEP + 1.0
            await cluster.sio.wait_for(client_id, "connect", 3.0)
        await a.log_match(rf"closing idle socket {first_sids['idle-a']}", 1.0)
        await b.log_match(rf"closing idle socket {first_sids['idle-b']}", 1.0)
        # The pings went on all along: the idle ones were not dropped as dead.
        assert not cluster.sio.seen(None, "disconnect", reason="ping timeout")
        # Twice the idle timeout, and the busy ones are still there.
        busy_since = min(cluster.sio.seen(c, "connect")[0]["received"] for c in busy)
        await cluster.sleep(max(0.0, busy_since + 2 * IDLE + SWEEP - time.monotonic()))
        for client_id in busy:
            assert not cluster.sio.seen(client_id, "disconnect"), cluster.sio.describe(client_id)
        for client_id in busy:
            entry = cluster.devices("t1", client_id)["d"]
            assert entry["lastActivity"] >= entry["connectedAt"] + 1000  # flushed activity

        # Cluster-wide, nothing stale stays behind: the registry is the live connections.
        everyone = busy + idle

        def exact() -> None:
            live = cluster.live_sids(everyone)
            assert cluster.registry_sids() == live
            assert cluster.command("ZCARD", "caas:activity") == len(live)
            assert not live & set(first_sids.values())

        await cluster.eventually(exact, 2.0)
        for client_id in idle:
            cluster.sio.disconnect(client_id)

        def only_the_busy_ones() -> None:
            exact()
            assert not cluster.live_sids(idle)
            assert cluster.registry_sids() == cluster.live_sids(busy)

        await cluster.eventually(only_the_busy_ones, 3.0)
        await cluster.always(only_the_busy_ones, 0.5)
    finally:
        running.clear()
        await beating
