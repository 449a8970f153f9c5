"""``caas-socketctl`` against a real cluster: two nodes, the official client, one Redis.

Node ``a`` has a 2 s lease, node ``b`` a 60 s one.  After ``kill -9`` of ``a``,
``b`` is stopped with SIGSTOP so that nobody reaps ``a`` before the tool does:
``check`` must see ``a``'s entries as stale, change nothing without
``--purge``, and remove them with it, announcing presence as a node's reap does.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from typing import Any

import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from caas_socket.client import CommandClient
from tests.ctl.conftest import snapshot
from tests.support.nodes import CaasNode

READY = [r"node \S+ started", r"registry reconciled", r"bus subscribed"]


def warnings_logged(node: CaasNode) -> float:
    """``caas_log_events_total{level="warn"}`` of a node's /metrics."""
    with urllib.request.urlopen(node.health_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r'^caas_log_events_total\{level="warn"\} (\S+)$', text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def rows(stdout: str) -> dict[str, list[str]]:
    """The device rows of ``devices``, by device id."""
    return {line.split()[0]: line.split() for line in stdout.splitlines()[2:]}


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor

    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_the_tool_on_a_live_cluster(
    clean_redis, caas_node, sio, mint, secret, ctl, subscribe
):
    url = clean_redis.url

    def start(server_id: str, ttl: str) -> CaasNode:
        args = ("--jwt-secret", secret, "--redis", url, "--server-id", server_id)
        node: CaasNode = caas_node(*args, "--lease-ttl", ttl, ready=READY)
        return node

    a, b = await gatherResults([deferToThread(start, "a", "2s"), deferToThread(start, "b", "60s")])

    async def connect(client: str, node: CaasNode, user: str, **opts: Any) -> str:
        auth, query = {"token": mint(user, "t1")}, {"deviceId": client}
        return str((await sio.connected(client, node.url, auth=auth, query=query, **opts))["sid"])

    laptop = await connect("laptop", a, "alice", reconnection=False)
    phone = await connect("phone", b, "alice")
    tablet = await connect("tablet", a, "bob", reconnection=False)
    await connect("desk", b, "carol")

    # devices: both of alice's, with their nodes, alive.
    result = await ctl("devices", "t1", "alice", "--redis", url)
    assert result.status == 0, result
    found = rows(result.stdout)
    assert found["laptop"][1:3] == [laptop, "a"] and found["laptop"][-1] == "alive"
    assert found["phone"][1:3] == [phone, "b"] and found["phone"][-1] == "alive"
    result = await ctl("--json", "devices", "t1", "alice", "--redis", url)
    listed = {d["deviceId"]: d for d in result.json()["devices"]}
    assert {d: (v["serverId"], v["nodeAlive"]) for d, v in listed.items()} == {
        "laptop": ("a", True),
        "phone": ("b", True),
    }

    # emit: every device of the user, on both nodes; then one device only.
    result = await ctl("emit", "t1", "alice", "hello", "--data", '{"n": 1}', "--redis", url)
    assert result.stdout == "event 'hello' to t1/alice: received by 2 nodes on caas:api\n"
    for client in ("laptop", "phone"):
        assert (await sio.wait_for(client, "hello", 3.0))["args"] == [{"n": 1}]
    await ctl("emit", "t1", "alice", "psst", "--device", "phone", "--redis", url)
    assert (await sio.wait_for("phone", "psst", 3.0))["args"] == []  # no data: no argument
    await sio.quiet("laptop", "psst", 0.3)
    await sio.quiet("tablet", ("hello", "psst"), 0.0)

    # emit-room: only the members (here one device, joined with the Python client).
    assert CommandClient(url).join("t1", "alice", "chat-42", device="laptop") == 2
    result = await ctl("emit-room", "t1", "chat-42", "news", "--data", '"x"', "--redis", url)
    assert result.status == 0, result
    assert (await sio.wait_for("laptop", "news", 3.0))["args"] == ["x"]
    await sio.quiet("phone", "news", 0.3)

    # kick: the client is told why, and stays away.
    result = await ctl("kick", "t1", "carol", "--reason", "test-kick", "--redis", url)
    assert result.stdout == (
        "disconnect t1/carol (reason 'test-kick', stays away): received by 2 nodes on caas:api\n"
    )
    assert (await sio.wait_for("desk", "caas:kicked", 3.0))["args"] == [{"reason": "test-kick"}]
    assert (await sio.wait_for("desk", "disconnect", 3.0))["reason"] == "io server disconnect"
    await sio.quiet("desk", "connect", 0.5)

    # Invalid commands are dropped, logged and counted on every node; nobody hears of them.
    warned = [warnings_logged(n) for n in (a, b)]
    marks = [n.mark() for n in (a, b)]
    reserved = '{"v":1,"op":"emit","tenantId":"t1","userId":"alice","event":"connect"}'
    assert clean_redis.command("PUBLISH", "caas:api", reserved) == 2
    assert clean_redis.command("PUBLISH", "caas:api", "not json") == 2
    for node, mark, before in zip((a, b), marks, warned, strict=True):
        await node.log_match(r"command refused: invalid_field", 3.0, since=mark)
        await node.log_match(r"command refused: invalid_json", 3.0, since=mark)
        assert await deferToThread(warnings_logged, node) >= before + 2
    await sio.quiet(None, "connect_error", 0.0)

    # nodes: both alive.
    result = await ctl("nodes", "--json", "--redis", url)
    nodes = {n["serverId"]: n for n in result.json()["nodes"]}
    assert {n: v["lease"] for n, v in nodes.items()} == {"a": "alive", "b": "alive"}
    assert nodes["a"]["entries"] == 2 and nodes["b"]["ttlMs"] > 50_000
    human = await ctl("nodes", "--redis", url)
    assert human.stdout.splitlines()[0] == "2 nodes, 2 alive"

    # kill -9 a; stop b, which would reap a otherwise; wait for a's lease to end.
    a.kill()
    b.pause()
    try:
        deadline = time.monotonic() + 5.0
        while clean_redis.command("PTTL", "caas:node:a") != -2:
            assert time.monotonic() < deadline, "a's lease did not expire"
            await sleep(0.05)
        before = snapshot(clean_redis)
        result = await ctl("check", "--redis", url)
        assert result.status == 3, result
        assert "node a: 2 entries" in result.stdout
        assert f"t1/alice device laptop socket {laptop}" in result.stdout
        assert f"t1/bob device tablet socket {tablet}" in result.stdout
        report = (await ctl("check", "--json", "--redis", url)).json()
        assert [(s["serverId"], len(s["entries"])) for s in report["before"]["stale"]] == [("a", 2)]
        assert report["purged"] is None and report["before"]["inconsistencies"] == []
        assert snapshot(clean_redis) == before, "check without --purge changed the registry"

        presence = subscribe("caas:presence")
        result = await ctl("check", "--purge", "--json", "--redis", url)
        assert result.status == 0, result
        report = result.json()
        removed = {e["socketId"] for e in report["purged"][0]["removed"]}
        assert (report["purged"][0]["serverId"], removed) == ("a", {laptop, tablet})
        assert report["after"]["clean"] is True
        assert clean_redis.command("HKEYS", "caas:conn:t1:alice") == [b"phone"]
        assert clean_redis.command("EXISTS", "caas:conn:t1:bob") == 0
        # Announced like a node's reap would (carol's check, due meanwhile, may come too).
        changes: list[dict[str, Any]] = []
        while len(changes) < 3:
            change = json.loads(presence.message()[1])
            if change["userId"] != "carol":
                changes.append(change)
        assert sorted((c["userId"], c["deviceId"] or "-", c["status"]) for c in changes) == [
            ("alice", "laptop", "offline"),
            ("bob", "-", "offline"),
            ("bob", "tablet", "offline"),
        ]
    finally:
        b.resume()

    result = await ctl("check", "--redis", url)
    assert result.status == 0, result
    assert result.stdout.splitlines()[-1] == (
        "registry consistent: no stale entries, no inconsistencies"
    )
    nodes = (await ctl("nodes", "--json", "--redis", url)).json()["nodes"]
    assert [(n["serverId"], n["lease"], n["entries"]) for n in nodes] == [("b", "alive", 1)]
    # The survivor carries on.
    await ctl("emit", "t1", "alice", "still-here", "--redis", url)
    assert (await sio.wait_for("phone", "still-here", 3.0))["args"] == []
