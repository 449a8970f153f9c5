"""A client that stops reading is dropped before its backlog eats the node's memory.

Our own WebSocket client connects (handshake, ``40{auth}``), then never reads
again, with a 4 KiB receive buffer: its TCP window closes at once.  Big events
for it arrive through the command channel, interleaved with small ones for a
well-behaved official client on the same node.  Once more than
``--max-outbound-buffer`` (256 KiB here) waits in user space for it, the node
drops it: its registry entry goes, the node logs ``event="slow_consumer"``
and ``/metrics`` counts it; the node's RSS grows by a bounded amount (the
kernel's socket buffers hold the rest), and the other client misses nothing.
"""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet.threads import deferToThread

from caas_socket.client import CommandClient
from tests.cluster.conftest import Cluster
from tests.reliability.figures import figure
from tests.reliability.measure import RssSampler, metric
from tests.reliability.rawws import ENGINE_PATH, RawWebSocket

LIMIT = 256 * 1024
BIG = 64 * 1024
#: Enough to fill the kernel's buffers (a few MiB on loopback) and then the limit.
FLOOD = 200
#: What the drop may cost in RSS, at most (the limit, plus frames in flight and slack).
RSS_BOUND_MIB = 24


@pytest_twisted.ensureDeferred
async def test_slow_consumer_is_dropped_and_others_lose_nothing(cluster: Cluster) -> None:
    (node,) = await cluster.start("n1", args=("--max-outbound-buffer", str(LIMIT)))
    await cluster.connected("bob", node.url, "bob", "phone")
    slow = RawWebSocket(
        node.host, node.port, path=ENGINE_PATH + "&deviceId=stuck", rcvbuf=4096
    ).open()
    slow.engine_open()
    kind, answer = slow.connect_namespace({"token": cluster.mint("slowpoke", "t1")})
    assert kind == "connect", answer
    assert set(cluster.devices("t1", "slowpoke")) == {"stuck"}
    since = node.mark()
    big = "x" * BIG

    def flood() -> float:
        with CommandClient(cluster.redis.url) as client:
            started = time.monotonic()
            for i in range(FLOOD):
                client.emit_to_device("t1", "slowpoke", "stuck", "blob", {"i": i, "pad": big})
                client.emit_to_user("t1", "bob", "tick", {"i": i})
            return time.monotonic() - started

    with RssSampler(node.pid) as rss:
        seconds = await deferToThread(flood)
        await node.log_match(r'"event": "slow_consumer"', 10.0, since)
        await cluster.eventually(lambda: _gone(cluster), 5.0)
        await cluster.sleep(0.5)

    dropped = node.events(since, event="slow_consumer")
    assert len(dropped) == 1, dropped
    assert dropped[0]["dropped"] > LIMIT
    assert metric(node.health_url, "caas_slow_consumers_total") >= 1

    async def all_ticks() -> None:
        got = [e["args"][0]["i"] for e in cluster.sio.seen("bob", "tick")]
        assert got == list(range(FLOOD)), f"bob got {len(got)} of {FLOOD}"

    await cluster.eventually(all_ticks, 5.0)
    assert not cluster.sio.seen("bob", "disconnect")
    slow.close()
    figure("slow-consumer", "dropped_after_bytes", dropped[0]["dropped"], "B", limit=LIMIT)
    figure(
        "slow-consumer",
        "peak_rss_growth",
        round(rss.growth_kib / 1024, 2),
        "MiB",
        baseline_mib=round(rss.baseline / 1024, 1),
        sent_mib=round(FLOOD * BIG / 2**20, 1),
        flood_s=round(seconds, 2),
    )
    figure(
        "slow-consumer", "other_client_lost", FLOOD - len(cluster.sio.seen("bob", "tick")), "events"
    )
    assert rss.growth_kib <= RSS_BOUND_MIB * 1024


def _gone(cluster: Cluster) -> None:
    assert cluster.devices("t1", "slowpoke") == {}
