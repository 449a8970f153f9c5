"""Connections end with their token: clients come back with a fresh one, or refresh in band."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import jwt
import pytest_twisted

from tests.cluster.conftest import FAST_RECONNECT

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

TTL = 3
NO_LEEWAY = ("--jwt-leeway", "0")
REFRESH_EVENT = "caas:token-expiring"


def _expires_ms(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"]) * 1000


@pytest_twisted.ensureDeferred
async def test_expired_connection_is_closed_and_comes_back_with_a_fresh_token(cluster: Cluster):
    await cluster.start("a", "b", args=NO_LEEWAY)
    short = cluster.mint("tom", ttl=TTL)
    fresh = cluster.mint("tom", ttl=60)
    cluster.sio.command(
        "connect",
        "tom",
        url=cluster.balancer.url,
        opts=FAST_RECONNECT,
        query={"deviceId": "laptop"},
        authTokens=[short, fresh],
    )
    first = await cluster.sio.wait_for("tom", ("connect", "connect_error"), 5.0)
    assert first["type"] == "connect", first

    gone = await cluster.sio.wait_for("tom", "disconnect", TTL + 2.0)
    assert gone["reason"] == "transport close"  # so socket.io-client reconnects
    assert gone["active"] is True
    expires = _expires_ms(short)
    assert expires - 100 <= gone["t"] <= expires + 1000, (gone["t"], expires)
    back = await cluster.sio.wait_for("tom", ("connect", "connect_error"), 3.0)
    assert back["type"] == "connect", back
    assert [e["call"] for e in cluster.sio.seen("tom", "auth-token")] == [1, 2]

    # Registered afresh, on the next node of the balancer; the old entry is gone.
    by_port = {node.port: (server_id, node) for server_id, node in cluster.nodes.items()}
    (_, old_node), (new_id, _) = (by_port[port] for port in cluster.balancer.routed)
    entry = cluster.devices("t1", "tom")["laptop"]
    assert entry["socketId"] == back["sid"] != first["sid"]
    assert entry["serverId"] == new_id
    assert cluster.registry_sids() == {back["sid"]}
    await old_node.log_match(rf"socket {first['sid']}: token expired, closing the transport", 1.0)
    cluster.sio.emit("tom", "heartbeat")
    await cluster.sio.wait_for("tom", "heartbeat", 3.0)


@pytest_twisted.ensureDeferred
async def test_a_client_answering_the_refresh_event_stays_connected(cluster: Cluster):
    a, _ = await cluster.start("a", "b", args=(*NO_LEEWAY, "--token-refresh-event", REFRESH_EVENT))
    short = cluster.mint("tim", ttl=TTL)
    fresh = cluster.mint("tim", ttl=60)
    expires = _expires_ms(short)
    sid = await cluster.connected(
        "tim", a.url, "tim", "phone", token=short, acks={REFRESH_EVENT: [{"token": fresh}]}
    )
    asked = await cluster.sio.wait_for("tim", REFRESH_EVENT, TTL + 1.0)
    assert asked["ack"] is True
    assert asked["args"] == [{"expiresAt": expires}]
    assert asked["t"] < expires  # asked before the end, not at it
    assert (await cluster.sio.wait_for("tim", "acked", 1.0))["name"] == REFRESH_EVENT
    await a.log_match(rf"socket {sid}: token refreshed", 2.0)

    # Well past the first token's expiry, the same connection is still there.
    await cluster.sleep(max(0.0, expires / 1000 - time.time() + 1.5))
    assert not cluster.sio.seen("tim", "disconnect"), cluster.sio.describe("tim")
    cluster.sio.emit("tim", "heartbeat")
    await cluster.sio.wait_for("tim", "heartbeat", 3.0)
    assert cluster.sid("tim") == sid
    assert cluster.registry_sids() == {sid}
    assert not a.find(rf"socket {sid}: token expired")
