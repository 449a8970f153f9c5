"""Churn soak: ~200 official clients connect, drop, leave, come back, change device, on 3 nodes.

Afterwards the registry holds exactly the live connections (0 ghosts, 0
missing, every index right), the users that never churned lost no ``sync``,
and each node's RSS is back within :data:`RSS_MARGIN` of what it was with all
clients connected before the main churn (after a warm-up churn, so that the
allocator's working set is already there).
"""

from __future__ import annotations

import time

import pytest_twisted

from tests.cluster.conftest import Cluster
from tests.reliability.figures import figure, rss_growth
from tests.reliability.scenario import Harness, sleep

NODES = ("n1", "n2", "n3")
USERS, DEVICES = 100, 2
#: Slot operations per second (drop, disconnect + come back, same device anew, new device).
CHURN_RATE = 15.0
WARMUP, CHURN = 8.0, 30.0
#: A node's RSS after the churn may exceed its level before by at most this (KiB or fraction).
RSS_MARGIN_KIB, RSS_MARGIN_FRACTION = 5 * 1024, 0.10


@pytest_twisted.ensureDeferred
async def test_churn_leaves_the_registry_exact_and_memory_flat(cluster: Cluster) -> None:
    await cluster.start(*NODES)
    harness = Harness(cluster, seed=7, sync_interval=1.0)
    population = harness.population
    started = time.monotonic()
    await harness.connect_users(USERS, DEVICES, steady=0.25, direct=0.3)
    figure(
        "churn",
        "connect_all_s",
        round(time.monotonic() - started, 2),
        "s",
        clients=len(population.slots),
    )
    harness.traffic.start()

    # Warm-up churn, then everyone back: the level to come back to.
    harness.start_churn(CHURN_RATE, direct=0.3)
    await sleep(WARMUP)
    harness.stop_churn()
    await harness.settle()
    await sleep(1.0)
    counts_before, rss_before = harness.counts(), harness.rss()

    harness.traffic.window = "churn"
    connects_before = population.tracker.connects
    ops_before = sum(population.ops.values())
    harness.start_churn(CHURN_RATE, direct=0.3)
    await sleep(CHURN)
    harness.stop_churn()
    harness.traffic.window = "settle"
    settle_s = await harness.settle()
    await sleep(1.0)
    counts_after, rss_after = harness.counts(), harness.rss()
    account = harness.traffic.account("churn")
    harness.traffic.stop()

    diff = harness.diff()
    assert diff is not None and diff.equal, str(diff)
    live = population.live()
    figure(
        "churn",
        "churn_operations",
        sum(population.ops.values()) - ops_before,
        "ops",
        seconds=CHURN,
        by_kind=dict(population.ops),
    )
    figure(
        "churn", "connects_during_churn", population.tracker.connects - connects_before, "connects"
    )
    figure("churn", "settle_s", settle_s, "s")
    figure("churn", "registry_ghosts", len(diff.ghosts), "entries", live=len(live))
    figure("churn", "registry_missing", len(diff.missing), "entries")
    figure(
        "churn",
        "steady_sync_lost",
        account.lost,
        "messages",
        expected=account.expected,
        p50_ms=account.p50_ms,
        p99_ms=account.p99_ms,
    )
    assert account.expected > 0
    assert (account.lost, account.duplicates, account.foreign) == (0, 0, 0), account
    assert len(live) == len(population.slots)

    for server_id in NODES:
        before, after = rss_before[server_id], rss_after[server_id]
        margin = max(RSS_MARGIN_KIB, int(before * RSS_MARGIN_FRACTION))
        rss_growth(
            "churn",
            server_id,
            before,
            after,
            (counts_before.get(server_id, 0), counts_after.get(server_id, 0)),
        )
        assert after <= before + margin, (server_id, before, after)
    assert not population.tracker.errors, population.tracker.errors[:5]
