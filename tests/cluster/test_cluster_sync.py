"""Cross-device sync in a cluster: every other device of the user, on any node, and nobody else."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_twisted

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

# How long to watch for deliveries that must not happen, once the wanted ones arrived.
QUIET = 0.7


@pytest_twisted.ensureDeferred
async def test_sync_reaches_every_other_device_of_the_user_and_nobody_else(cluster: Cluster):
    n1, n2, n3 = await cluster.start("n1", "n2", "n3")
    # client id -> (node, tenant, user, device)
    clients = {
        "alice-1": (n1, "t1", "alice", "a1"),
        "alice-1b": (n1, "t1", "alice", "a1b"),
        "alice-2": (n2, "t1", "alice", "a2"),
        "alice-3": (n3, "t1", "alice", "a3"),
        "bob": (n2, "t1", "bob", "b1"),
        "other-tenant-alice": (n3, "t2", "alice", "a1"),
        # tenant "a" user "b:c" and tenant "a:b" user "c": "a:b:c" either way, unescaped.
        "x1": (n1, "a", "b:c", "x1"),
        "x2": (n3, "a", "b:c", "x2"),
        "y1": (n2, "a:b", "c", "y1"),
        "y2": (n1, "a:b", "c", "y2"),
    }
    for client_id, (node, tenant, user, device) in clients.items():
        await cluster.connected(client_id, node.url, user, device, tenant=tenant)
    assert cluster.command("HLEN", cluster.user_key("t1", "alice")) == 4
    assert cluster.command("HLEN", "caas:conn:a:b%3Ac") == 2
    assert cluster.command("HLEN", "caas:conn:a%3Ab:c") == 2

    sent = {"alice-1": "from alice-1", "alice-3": "from alice-3", "x1": "from x1", "y1": "from y1"}
    for client_id, text in sent.items():
        cluster.sio.emit(client_id, "sync", {"text": text, "nested": [1, {"k": None}]})
    expected = {
        "alice-1": {"from alice-3"},
        "alice-1b": {"from alice-1", "from alice-3"},
        "alice-2": {"from alice-1", "from alice-3"},
        "alice-3": {"from alice-1"},
        "bob": set(),
        "other-tenant-alice": set(),
        "x1": set(),
        "x2": {"from x1"},
        "y1": set(),
        "y2": {"from y1"},
    }
    for client_id, texts in expected.items():
        for _ in texts:
            await cluster.sio.wait_for(client_id, "sync", 3.0)
    await cluster.sleep(QUIET)

    received = {
        client_id: [e["args"] for e in cluster.sio.seen(client_id, "sync")] for client_id in clients
    }
    for client_id, texts in expected.items():
        got = [args[0]["text"] for args in received[client_id]]
        assert sorted(got) == sorted(texts), f"{client_id} got {received[client_id]}"
        for args in received[client_id]:
            assert args == [{"text": args[0]["text"], "nested": [1, {"k": None}]}]
