"""Faults under load: Redis lost or hung, a node killed or hung past its lease.

Each test runs 3 nodes (leases of 2 s, Redis calls bounded by 500 ms) with
80 official clients through the balancer: half of the users send ``sync`` to
their other device twice a second, the other half churn (4 operations a
second) while the fault lasts.  Measured: the time until the registry equals
the live connections again (from the end of the fault), the deliveries lost
during it, the registry entries still wrong afterwards (0), and the error
lines each node logged (an outage is logged once, not per call).  Steady
traffic before and after the fault loses nothing.

Then two focused cases of what the load tests revealed: a device that
reconnects while Redis is away must not leave its older connection open and
unregistered once Redis is back.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.cluster.conftest import LEASE_TTL, Cluster
from tests.reliability.figures import figure
from tests.reliability.population import FAST_RECONNECT
from tests.reliability.scenario import FAULTS, FaultResult, Harness, run_fault, sleep

NODES = ("n1", "n2", "n3")
ARGS = ("--redis-timeout", "500ms")
USERS = 40
#: From the end of the fault: a Redis back within 2 s (pool and bus back-off caps) plus a
#: lease renewal (ttl/3) and the restore; a dead node reaped within 1.25 x ttl.
CONVERGE = {
    "redis-restart": 8.0,
    "redis-pause": 8.0,
    "node-kill": 1.25 * LEASE_TTL + 4.0,
    "node-pause": 6.0,
}


def report(result: FaultResult) -> None:
    name = result.name
    if result.converge_s is None:
        figure(
            name,
            "converge_s",
            "NOT CONVERGED",
            "",
            within_s=CONVERGE.get(name),
            how=result.unconverged,
        )
    else:
        figure(name, "converge_s", result.converge_s, "s", **result.extra)
    figure(
        name,
        "sync_lost_during_fault",
        result.during.lost,
        "deliveries",
        expected=result.during.expected,
    )
    figure(name, "wrong_entries_after", result.wrong_after, "entries")
    figure(name, "sync_p99_after_ms", result.after.p99_ms, "ms", p50=result.after.p50_ms)
    loudest = max((len(lines) for lines in result.loud_lines.values()), default=0)
    figure(name, "error_lines_per_node_max", loudest, "lines")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest_twisted.ensureDeferred
async def test_fault_under_load_converges(cluster: Cluster, fault: str) -> None:
    await cluster.start(*NODES, args=ARGS)
    harness = Harness(cluster, seed=11, sync_interval=0.5)
    await harness.connect_users(USERS, 2, steady=0.5)
    harness.traffic.start()
    try:
        result = await run_fault(
            harness, fault, FAULTS[fault], converge_timeout=CONVERGE[fault], churn=4.0
        )
    finally:
        harness.traffic.stop()
    report(result)
    assert result.converge_s is not None, result.unconverged
    assert result.converge_s <= CONVERGE[fault]
    assert result.wrong_after == 0
    for account in (result.before, result.after):
        assert account.expected > 0
        assert (account.lost, account.duplicates, account.foreign) == (0, 0, 0), account
    assert result.during.foreign == 0 and result.during.duplicates == 0, result.during
    if fault == "node-pause":
        assert result.extra["resurrected"] == 0
    if fault.startswith("redis"):
        # README: "an outage is logged when it starts and when it ends, not per call".
        for server_id, lines in result.loud_lines.items():
            assert len(lines) <= 1, (server_id, lines[:3])
    assert not harness.population.tracker.errors


@pytest.mark.parametrize("same_node", [True, False], ids=["same-node", "other-node"])
@pytest_twisted.ensureDeferred
async def test_device_reconnecting_while_redis_is_down_leaves_one_connection(
    cluster: Cluster, same_node: bool
) -> None:
    """The same device connects again while Redis is down (an app restarted on a flaky net).

    Registration fails open, so nothing replaces the older connection then.
    Redis comes back empty; the node of the older connection restores first
    (on another node, that one is held back until then, so the order is
    fixed).  The registry must then hold the newer connection only, and the
    older one must be closed ("replaced") as a registration would have done:
    an open connection without an entry is reachable by nobody.
    """
    a, b = await cluster.start("a", "b", args=ARGS)
    old = await cluster.connected("old", a.url, "alice", "phone", **FAST_RECONNECT)
    await cluster.connected("other", b.url, "alice", "laptop", **FAST_RECONNECT)
    cluster.redis.stop()
    await sleep(0.3)
    later = a if same_node else b
    new = await cluster.connected("new", later.url, "alice", "phone", **FAST_RECONNECT)
    assert cluster.sid("old") == old  # fail open: both are served meanwhile
    since = a.mark()
    if not same_node:
        b.pause()
    try:
        cluster.redis.start()
        await a.log_match(r"registry reconciled", 8.0, since)
    finally:
        b.resume()

    def one_connection_per_device() -> None:
        live = cluster.live_sids(["old", "new", "other"])
        assert old not in live, f"the replaced connection {old} is still open"
        assert cluster.registry_sids() == live
        assert cluster.devices("t1", "alice")["phone"]["socketId"] == new

    await cluster.eventually(one_connection_per_device, 8.0)
    kicked = await cluster.sio.wait_for("old", "caas:kicked", 1.0)
    assert kicked["args"] == [{"reason": "replaced"}]


@pytest_twisted.ensureDeferred
async def test_connects_during_a_redis_outage_are_not_logged_one_by_one(cluster: Cluster) -> None:
    """README: "an outage is logged when it starts and when it ends, not per call"."""
    (a,) = await cluster.start("a", args=ARGS)
    await cluster.connected("first", a.url, "u0", "d")
    since = a.mark()
    cluster.redis.stop()
    try:
        for i in range(5):
            await cluster.connected(f"c{i}", a.url, f"u{i + 1}", "d")  # served: fail open
    finally:
        cluster.redis.start()
    await a.log_match(r"Redis available again", 8.0, since)
    loud = [
        line.split('"message": ', 1)[-1][:120]
        for line in a.lines[since:]
        if '"level": "error"' in line or '"level": "critical"' in line
    ]
    figure("redis-outage-logging", "error_lines", len(loud), "lines", connects_during_outage=5)
    assert len(loud) <= 1, loud


@pytest_twisted.ensureDeferred
async def test_a_subscriber_that_survived_a_redis_pause_is_not_torn_down(cluster: Cluster) -> None:
    """The bus subscription outlives a SIGSTOP of Redis; once Redis answers, sync flows on.

    Probes that could not be published while Redis was away prove nothing
    about the subscriber: it must not be torn down (the node would be deaf
    for its reconnect), and every delivery after the recovery arrives.
    """
    a, b = await cluster.start("a", "b", args=ARGS)
    await cluster.connected("on-a", a.url, "u", "d1")
    await cluster.connected("on-b", b.url, "u", "d2")
    marks = {node: node.mark() for node in (a, b)}
    cluster.redis.pause()
    try:
        await sleep(5.0)  # past two probe intervals (2 s each)
    finally:
        cluster.redis.resume()
    for node in (a, b):
        await node.log_match(r"Redis available again", 8.0, marks[node])
    await sleep(1.0)  # the publishing connections are back
    sent = 0
    for _ in range(40):  # 4 s of sync both ways, 10 a second
        sent += 1
        cluster.sio.emit("on-a", "sync", {"n": sent})
        cluster.sio.emit("on-b", "sync", {"n": sent})
        await sleep(0.1)
    await sleep(0.5)
    got = {c: len(cluster.sio.seen(c, "sync")) for c in ("on-a", "on-b")}
    deaf = {n.name + str(n.port): len(n.events(marks[n], event="bus_deaf")) for n in (a, b)}
    figure(
        "redis-pause-bus",
        "sync_lost_after_recovery",
        2 * sent - sum(got.values()),
        "deliveries",
        sent=2 * sent,
        deaf_reconnects=sum(deaf.values()),
    )
    assert sum(deaf.values()) == 0, f"healthy subscribers torn down: {deaf}"
    assert got == {"on-a": sent, "on-b": sent}, got
