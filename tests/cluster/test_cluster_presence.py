"""Presence across nodes: online at once, offline after the grace, versions that only grow."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest_twisted

from tests.cluster.conftest import GRACE, LEASE_TTL, PRESENCE_SWEEP

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

#: An offline change is due ``GRACE`` after the last device left; nodes look every second.
OFFLINE_LATEST = GRACE + PRESENCE_SWEEP + 1.0


async def _ask(cluster: Cluster, client_id: str, event: str, data: Any) -> Any:
    ref = cluster.sio.emit(client_id, event, data, ack=True)
    (answer,) = await cluster.sio.ack(client_id, ref)
    return answer


def _arrival(cluster: Cluster, watcher: str, change: dict[str, Any]) -> float:
    """When (``time.monotonic()``) ``watcher`` received the presence event ``change``."""
    events = cluster.sio.seen(watcher, "presence")
    return float(next(e["received"] for e in events if e["args"][0] == change))


def _versions_grow(changes: list[dict[str, Any]]) -> None:
    versions = [c["version"] for c in changes]
    assert all(isinstance(v, int) for v in versions), changes
    assert versions == sorted(set(versions)), f"versions do not strictly grow: {changes}"


@pytest_twisted.ensureDeferred
async def test_online_offline_with_grace_and_growing_versions(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    await cluster.connected("watch", b.url, "watcher", "w")
    assert await _ask(cluster, "watch", "presence:subscribe", {"userIds": ["p"]}) == {
        "subscribed": 1
    }
    assert await _ask(cluster, "watch", "presence:get", {"userIds": ["p"]}) == [
        {"userId": "p", "status": "offline", "devices": [], "version": 0}
    ]

    await cluster.connected("p1", a.url, "p", "d1")
    await cluster.presence_change("watch", "p", "online", 3.0)
    await cluster.presence_change("watch", "p", "online", 3.0, device="d1")
    assert len(cluster.presence_changes("watch", "p")) == 2

    # A flap within the grace, even onto another node, says nothing.
    cluster.sio.disconnect("p1")
    await cluster.sio.wait_for("p1", "disconnect", 3.0)
    await cluster.connected("p1-again", b.url, "p", "d1")
    await cluster.sleep(GRACE + PRESENCE_SWEEP + 0.5)
    assert len(cluster.presence_changes("watch", "p")) == 2, cluster.presence_changes("watch")

    version = cluster.presence_changes("watch", "p")[-1]["version"]
    assert await _ask(cluster, "watch", "presence:get", {"userIds": ["p", "nobody"]}) == [
        {"userId": "p", "status": "online", "devices": ["d1"], "version": version},
        {"userId": "nobody", "status": "offline", "devices": [], "version": 0},
    ]

    # A second device comes and goes: a device event each way, the user stays online.
    await cluster.connected("p2", a.url, "p", "d2")
    await cluster.presence_change("watch", "p", "online", 3.0, device="d2")
    cluster.sio.disconnect("p2")
    left = time.monotonic()
    offline = await cluster.presence_change("watch", "p", "offline", OFFLINE_LATEST, device="d2")
    assert GRACE - 0.1 <= _arrival(cluster, "watch", offline) - left <= OFFLINE_LATEST
    await cluster.sleep(0.3)
    assert [c for c in cluster.presence_changes("watch", "p") if c["deviceId"] is None] == [
        cluster.presence_changes("watch", "p")[0]
    ]

    # The last device leaves: device and user go offline, after the grace.
    since = len(cluster.presence_changes("watch", "p"))
    cluster.sio.disconnect("p1-again")
    left = time.monotonic()
    await cluster.presence_change("watch", "p", "offline", OFFLINE_LATEST, device="d1", since=since)
    user_offline = await cluster.presence_change(
        "watch", "p", "offline", OFFLINE_LATEST, since=since
    )
    assert GRACE - 0.1 <= _arrival(cluster, "watch", user_offline) - left <= OFFLINE_LATEST

    changes = cluster.presence_changes("watch", "p")
    assert [(c["deviceId"], c["status"]) for c in changes] == [
        (None, "online"),
        ("d1", "online"),
        ("d2", "online"),
        ("d2", "offline"),
        ("d1", "offline"),
        (None, "offline"),
    ]
    _versions_grow(changes)
    assert await _ask(cluster, "watch", "presence:get", {"userIds": ["p"]}) == [
        {"userId": "p", "status": "offline", "devices": [], "version": changes[-1]["version"]}
    ]


@pytest_twisted.ensureDeferred
async def test_subscriptions_are_bounded_and_tenants_isolated(cluster: Cluster):
    a, b = await cluster.start("a", "b", args=("--max-presence-subscriptions", "3"))
    await cluster.connected("w1", b.url, "watcher", "w", tenant="t1")
    await cluster.connected("w2", a.url, "watcher", "w", tenant="t2")

    subscribe = "presence:subscribe"
    assert await _ask(cluster, "w1", subscribe, {"userIds": ["x", "y", "z"]}) == {"subscribed": 3}
    assert await _ask(cluster, "w1", subscribe, {"userIds": ["sam"]}) == {
        "error": "too_many_subscriptions",
        "max": 3,
    }
    assert await _ask(cluster, "w1", subscribe, {"userIds": ["x"]}) == {"subscribed": 3}
    assert await _ask(cluster, "w1", "presence:unsubscribe", {"userIds": ["x"]}) == {
        "subscribed": 2
    }
    assert await _ask(cluster, "w1", subscribe, {"userIds": ["sam"]}) == {"subscribed": 3}
    assert await _ask(cluster, "w2", subscribe, {"userIds": ["a", "b", "c", "sam"]}) == {
        "error": "too_many_subscriptions",
        "max": 3,
    }
    assert await _ask(cluster, "w2", subscribe, {"userIds": ["sam"]}) == {"subscribed": 1}

    # "sam" of tenant t2 is not "sam" of tenant t1, whoever asks and wherever they are.
    await cluster.connected("sam-t2", b.url, "sam", "t2-phone", tenant="t2")
    await cluster.presence_change("w2", "sam", "online", 3.0, device="t2-phone")
    await cluster.connected("sam-t1", a.url, "sam", "t1-phone", tenant="t1")
    await cluster.presence_change("w1", "sam", "online", 3.0, device="t1-phone")
    await cluster.sleep(0.5)
    assert {c["deviceId"] for c in cluster.presence_changes("w1")} == {None, "t1-phone"}
    assert {c["deviceId"] for c in cluster.presence_changes("w2")} == {None, "t2-phone"}

    got = "presence:get"
    (t1_sam,) = await _ask(cluster, "w1", got, {"userIds": ["sam"]})
    (t2_sam,) = await _ask(cluster, "w2", got, {"userIds": ["sam"]})
    assert (t1_sam["status"], t1_sam["devices"]) == ("online", ["t1-phone"])
    assert (t2_sam["status"], t2_sam["devices"]) == ("online", ["t2-phone"])
    # A tenant's user whose id collides with another tenant's key, once unescaped.
    assert await _ask(cluster, "w1", got, {"userIds": ["t2:sam"]}) == [
        {"userId": "t2:sam", "status": "offline", "devices": [], "version": 0}
    ]
    assert await _ask(cluster, "w1", got, {"userIds": []}) == {"error": "invalid_user_ids"}


@pytest_twisted.ensureDeferred
async def test_users_of_a_killed_node_go_offline_after_reap_and_grace(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    await cluster.connected("watch", b.url, "watcher", "w")
    assert await _ask(cluster, "watch", "presence:subscribe", {"userIds": ["q", "r"]}) == {
        "subscribed": 2
    }
    await cluster.connected("q-a", a.url, "q", "qa", reconnection=False)
    await cluster.connected("r-a", a.url, "r", "ra", reconnection=False)
    await cluster.connected("r-b", b.url, "r", "rb")
    for user, device in (("q", "qa"), ("r", "ra"), ("r", "rb")):
        await cluster.presence_change("watch", user, "online", 3.0, device=device)
    # A node reaps only once it has held its lease for a whole ttl (docs/REDIS.rst).
    await cluster.sleep(LEASE_TTL)

    a.kill()
    killed = time.monotonic()
    bound = 1.25 * LEASE_TTL + GRACE + PRESENCE_SWEEP + 1.5
    await cluster.presence_change("watch", "q", "offline", bound, device="qa")
    await cluster.presence_change("watch", "q", "offline", 1.0)
    await cluster.presence_change("watch", "r", "offline", 1.0, device="ra")
    elapsed = time.monotonic() - killed
    assert GRACE <= elapsed <= bound
    # r still has a device on b: online it stays.
    await cluster.sleep(0.5)
    r_changes = cluster.presence_changes("watch", "r")
    assert [(c["deviceId"], c["status"]) for c in r_changes] == [
        (None, "online"),
        ("ra", "online"),
        ("rb", "online"),
        ("ra", "offline"),
    ]
    for user in ("q", "r"):
        _versions_grow(cluster.presence_changes("watch", user))
    states = await _ask(cluster, "watch", "presence:get", {"userIds": ["q", "r"]})
    assert [(s["status"], s["devices"]) for s in states] == [("offline", []), ("online", ["rb"])]


@pytest_twisted.ensureDeferred
async def test_connected_users_are_online_again_after_redis_restarts_empty(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    await cluster.connected("watch", b.url, "watcher", "w")
    await _ask(cluster, "watch", "presence:subscribe", {"userIds": ["p", "q"]})
    await cluster.connected("p", a.url, "p", "pd")
    await cluster.connected("q", b.url, "q", "qd")
    for user, device in (("p", "pd"), ("q", "qd")):
        await cluster.presence_change("watch", user, "online", 3.0, device=device)
    ids = ["watch", "p", "q"]

    cluster.redis.restart()  # stopped, and back empty: the nodes restore their entries
    await cluster.eventually(lambda: _same(cluster.registry_sids(), cluster.live_sids(ids)), 6.0)

    async def online_again() -> None:
        states = await _ask(cluster, "watch", "presence:get", {"userIds": ["p", "q"]})
        assert [(s["status"], s["devices"]) for s in states] == [
            ("online", ["pd"]),
            ("online", ["qd"]),
        ], states

    await cluster.eventually(online_again, GRACE + PRESENCE_SWEEP + 1.0, interval=0.2)


@pytest_twisted.ensureDeferred
async def test_a_device_that_left_during_a_redis_outage_is_announced_offline(cluster: Cluster):
    a, b = await cluster.start("a", "b")
    await cluster.connected("watch", b.url, "watcher", "w")
    await _ask(cluster, "watch", "presence:subscribe", {"userIds": ["p"]})
    await cluster.connected("p", a.url, "p", "pd")
    await cluster.presence_change("watch", "p", "online", 3.0, device="pd")

    cluster.redis.stop()
    cluster.sio.disconnect("p")
    await cluster.sio.wait_for("p", "disconnect", 3.0)
    await cluster.sleep(0.5)  # the node noticed (its presence check could not be scheduled)
    cluster.redis.start()
    await cluster.eventually(lambda: _same(cluster.registry_sids(), {cluster.sid("watch")}), 6.0)

    # The watcher still believes p online: it must be told.
    await cluster.presence_change("watch", "p", "offline", GRACE + PRESENCE_SWEEP + 3.0)
    assert await _ask(cluster, "watch", "presence:get", {"userIds": ["p"]}) == [
        {
            "userId": "p",
            "status": "offline",
            "devices": [],
            "version": cluster.presence_changes("watch", "p")[-1]["version"],
        }
    ]
    _versions_grow(cluster.presence_changes("watch", "p"))


def _same(left: set[str], right: set[str]) -> None:
    assert left == right, (left, right)
