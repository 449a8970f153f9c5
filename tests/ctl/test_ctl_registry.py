"""``caas-socketctl devices|nodes|check`` on registries built with the nodes' own code.

Leases and entries are written with :class:`RedisRegistry`, exactly as nodes
write them; the broken states ``check`` must find are then made by hand (a
bug or a hand edit is the only way to get them).  Each CLI run is a real
subprocess.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from caas_socket.cluster.presence import RedisPresenceStore
from caas_socket.redis_connection import connect
from caas_socket.registry.interfaces import DeviceLimitPolicy, Entry
from caas_socket.registry.redis import RedisRegistry
from tests.ctl.conftest import snapshot
from tests.support.redis_server import RedisServer

_sockets = itertools.count()


def entry(server: str, user: str, device: str, tenant: str = "t1") -> Entry:
    return Entry(f"sock-{next(_sockets)}", user, tenant, device, server, 1_000_000, 1_000_500)


@pytest_twisted.async_yield_fixture
async def node(clean_redis: RedisServer) -> AsyncIterator[Callable[..., Any]]:
    """``await node(server_id, ttl, *entries)``: a lease and its entries, as a node writes them."""
    opened = []

    async def start(server_id: str, ttl: float, *entries: Entry) -> RedisRegistry:
        redis = await connect(clean_redis.url, reactor, pool_size=1, timeout=1.0)
        opened.append(redis)
        registry = RedisRegistry(redis, reactor)
        await registry.acquire_lease(server_id, ttl)
        presence = RedisPresenceStore(redis, reactor, prefix="caas:", timeout=1.0)
        for e in entries:
            assert (await registry.register(e, 10, DeviceLimitPolicy.REJECT)).accepted
            await presence.device_online(e.tenant_id, e.user_id, e.device_id)
        return registry

    yield start
    for redis in opened:
        await redis.disconnect()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_devices_lists_entries_and_their_leases(clean_redis, node, ctl):
    laptop, phone = entry("n1", "alice", "laptop"), entry("n2", "alice", "phone")
    await node("n1", 30.0, laptop)
    await node("n2", 0.2, phone)
    await sleep(0.4)  # n2's lease expired, nobody reaped it
    result = await ctl("devices", "t1", "alice", "--redis", clean_redis.url)
    assert result.status == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "t1/alice: 2 connections"
    assert lines[1].split()[:3] == ["DEVICE", "SOCKET", "NODE"]
    assert lines[2].split()[:3] == ["laptop", laptop.socket_id, "n1"]
    assert lines[2].endswith("alive") and lines[3].endswith("EXPIRED")
    assert "1970-01-01 00:16:40Z" in lines[2]  # connectedAt 1_000_000 ms
    result = await ctl("--json", "--redis", clean_redis.url, "devices", "t1", "alice")
    assert result.json() == {
        "tenantId": "t1",
        "userId": "alice",
        "devices": [
            {**_stored(laptop), "nodeAlive": True},
            {**_stored(phone), "nodeAlive": False},
        ],
    }
    nobody = await ctl("devices", "t1", "nobody", "--redis", clean_redis.url)
    assert (nobody.status, nobody.stdout) == (0, "t1/nobody: 0 connections\n")


def _stored(e: Entry) -> dict[str, Any]:
    return {
        "socketId": e.socket_id,
        "userId": e.user_id,
        "tenantId": e.tenant_id,
        "deviceId": e.device_id,
        "serverId": e.server_id,
        "connectedAt": e.connected_at,
        "lastActivity": e.last_activity,
    }


@pytest_twisted.ensureDeferred
async def test_nodes_and_check_purge_of_an_expired_node(clean_redis, node, ctl, subscribe):
    live = await node("live", 30.0, entry("live", "alice", "laptop"))
    await node("dead", 0.2, entry("dead", "alice", "phone"), entry("dead", "bob", "tablet"))
    await sleep(0.4)
    listed = await ctl("nodes", "--json", "--redis", clean_redis.url)
    assert listed.status == 0, listed
    nodes = {n["serverId"]: n for n in listed.json()["nodes"]}
    assert nodes["live"]["lease"] == "alive" and 0 < nodes["live"]["ttlMs"] <= 30_000
    assert nodes["live"]["generation"] == live._generation
    assert nodes["dead"] | {"generation": None} == {
        "serverId": "dead",
        "lease": "expired",
        "ttlMs": None,
        "generation": None,
        "entries": 2,
        "reaping": 0,
        "stale": True,
    }
    human = await ctl("nodes", "--redis", clean_redis.url)
    assert human.stdout.splitlines()[0] == "2 nodes, 1 alive"
    assert human.stdout.splitlines()[2].split()[:2] == ["dead", "expired"]

    before = snapshot(clean_redis)
    dry = await ctl("check", "--redis", clean_redis.url)
    assert dry.status == 3, dry
    assert "node dead: 2 entries" in dry.stdout
    assert "t1/bob device tablet" in dry.stdout
    assert "dry run, nothing changed: --purge would reap 1 node (2 entries)" in dry.stdout
    assert snapshot(clean_redis) == before

    presence = subscribe("caas:presence")
    purged = await ctl("check", "--purge", "--json", "--redis", clean_redis.url)
    assert purged.status == 0, purged
    report = purged.json()
    assert [p["serverId"] for p in report["purged"]] == ["dead"]
    assert sorted(e["deviceId"] for e in report["purged"][0]["removed"]) == ["phone", "tablet"]
    assert report["after"]["clean"] is True and report["before"]["clean"] is False
    assert clean_redis.command("HKEYS", "caas:conn:t1:alice") == [b"laptop"]
    assert clean_redis.command("EXISTS", "caas:reaped:dead") == 1  # fenced, as a node's reap
    # Presence learns as from a node's reap: bob has no device left anywhere.
    changes = [json.loads(presence.message()[1]) for _ in range(3)]
    presence.nothing()
    assert sorted((c["userId"], c["deviceId"] or "-", c["status"]) for c in changes) == [
        ("alice", "phone", "offline"),
        ("bob", "-", "offline"),
        ("bob", "tablet", "offline"),
    ]
    again = await ctl("check", "--redis", clean_redis.url)
    assert again.status == 0, again
    assert again.stdout.splitlines()[-1] == (
        "registry consistent: no stale entries, no inconsistencies"
    )


@pytest_twisted.ensureDeferred
async def test_check_reports_inconsistencies_and_purge_leaves_them(clean_redis, node, ctl):
    await node("n1", 30.0, entry("n1", "alice", "laptop"))
    # A socket in the node's set without its entry, and entries no node indexes.
    clean_redis.command("SADD", "caas:server:n1:sockets", "ghost-socket")
    orphan = entry("n1", "carol", "phone")
    clean_redis.command("HSET", "caas:conn:t1:carol", "phone", orphan.to_json())
    stray = entry("nowhere", "dave", "tv")
    clean_redis.command("HSET", "caas:conn:t1:dave", "tv", stray.to_json())
    for args in (("check",), ("check", "--purge")):
        result = await ctl(*args, "--json", "--redis", clean_redis.url)
        assert result.status == 3, result
        report = result.json()
        found = (report["after"] or report["before"])["inconsistencies"]
        assert sorted((f["kind"], f["serverId"], f["socketId"]) for f in found) == [
            ("dangling_socket", "n1", "ghost-socket"),
            ("orphan_entry", "n1", orphan.socket_id),
            ("orphan_entry", "nowhere", stray.socket_id),
        ]
    # Nothing repaired by hand-written deletes: the evidence stays for a human.
    assert clean_redis.command("SISMEMBER", "caas:server:n1:sockets", "ghost-socket") == 1
    assert clean_redis.command("HEXISTS", "caas:conn:t1:dave", "tv") == 1
    human = await ctl("check", "--redis", clean_redis.url)
    assert "inconsistencies (not repaired by --purge" in human.stdout
    assert "orphan_entry node nowhere: t1/dave device tv: not in the sockets set of its node" in (
        human.stdout
    )
    assert "(a node the registry does not know)" in human.stdout


@pytest_twisted.ensureDeferred
async def test_prefix_selects_the_deployment(clean_redis, ctl):
    redis = await connect(clean_redis.url, reactor, pool_size=1, timeout=1.0)
    try:
        staging = RedisRegistry(redis, reactor, prefix="staging:")
        await staging.acquire_lease("s1", 30.0)
        await staging.register(entry("s1", "alice", "laptop"), 5, DeviceLimitPolicy.REJECT)
    finally:
        await redis.disconnect()
    default = await ctl("nodes", "--json", "--redis", clean_redis.url)
    assert default.json() == {"nodes": []}
    env = {"CAAS_REDIS": clean_redis.url, "CAAS_REDIS_PREFIX": "staging:"}
    mine = await ctl("devices", "t1", "alice", "--json", env=env)
    assert [d["deviceId"] for d in mine.json()["devices"]] == ["laptop"]
    flag_wins = await ctl("--redis-prefix", "caas:", "devices", "t1", "alice", env=env)
    assert flag_wins.stdout == "t1/alice: 0 connections\n"
