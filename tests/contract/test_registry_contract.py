"""The registry contract: one suite, run against every backend.

A ``cluster`` plays several nodes sharing one store: several
:class:`MemoryRegistry` on one :class:`MemoryStore`, or several
:class:`RedisRegistry`, each with its own connection, on one real
``redis-server``.  Both run on the real reactor, so lease TTLs are real time
(0.3 s) and the waits stay well under a second.  Redis nodes reap and read in
batches of 7 so the batching is exercised by every test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults

from caas_socket.redis_connection import RedisConnection, connect
from caas_socket.registry.interfaces import (
    DeviceLimitPolicy,
    Entry,
    Fenced,
    LeaseState,
    Registry,
)
from caas_socket.registry.memory import MemoryRegistry, MemoryStore
from caas_socket.registry.redis import RedisRegistry

REJECT, EVICT = DeviceLimitPolicy.REJECT, DeviceLimitPolicy.EVICT_OLDEST
TTL = 0.3
_sockets = itertools.count()


def entry(
    device: str = "d1",
    user: str = "u1",
    tenant: str = "t1",
    server: str = "s1",
    connected_at: int = 1000,
    last_activity: int | None = None,
) -> Entry:
    return Entry(
        socket_id=f"sock-{next(_sockets):06d}",
        user_id=user,
        tenant_id=tenant,
        device_id=device,
        server_id=server,
        connected_at=connected_at,
        last_activity=connected_at if last_activity is None else last_activity,
    )


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def expire() -> None:
    """Wait until leases taken with :data:`TTL` have expired."""
    await sleep(TTL + 0.15)


def concurrently(*coros: object) -> Deferred[list[object]]:
    return gatherResults([Deferred.fromCoroutine(c) for c in coros])  # type: ignore[arg-type]


def by_socket(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: e.socket_id)


class Cluster:
    """A factory of registries playing nodes of one cluster."""

    def __init__(self, kind: str, redis_url: str | None = None) -> None:
        self.kind, self._url = kind, redis_url
        self._store = MemoryStore(reactor)
        self._connections: list[RedisConnection] = []

    async def node(self) -> Registry:
        if self.kind == "memory":
            return MemoryRegistry(self._store)
        assert self._url is not None
        connection = await connect(self._url, reactor, pool_size=2, timeout=2.0)
        self._connections.append(connection)
        return RedisRegistry(connection, reactor, timeout=2.0, batch_size=7)

    async def nodes(self, count: int) -> list[Registry]:
        return [await self.node() for _ in range(count)]

    async def close(self) -> None:
        for connection in self._connections:
            await connection.disconnect()


@pytest.fixture(params=["memory", "redis"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    url = request.getfixturevalue("clean_redis").url if request.param == "redis" else None
    built = Cluster(request.param, url)
    yield built
    pytest_twisted.blockon(Deferred.fromCoroutine(built.close()))


# -- connections -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_register_unregister_round_trip(cluster: Cluster) -> None:
    registry = await cluster.node()
    e = entry()
    result = await registry.register(e, 3, REJECT)
    assert (result.accepted, result.replaced, result.evicted) == (True, None, ())
    assert await registry.user_entries("t1", "u1") == [e]
    assert await registry.server_entries("s1") == [e]
    assert await registry.unregister(e) is True
    assert await registry.user_entries("t1", "u1") == []
    assert await registry.server_entries("s1") == []
    assert await registry.unregister(e) is False


@pytest_twisted.ensureDeferred
async def test_replace_same_device(cluster: Cluster) -> None:
    registry = await cluster.node()
    first, second = entry(), entry(connected_at=2000)
    await registry.register(first, 1, REJECT)
    result = await registry.register(second, 1, REJECT)
    assert (result.accepted, result.replaced, result.evicted) == (True, first, ())
    assert await registry.user_entries("t1", "u1") == [second]
    assert await registry.server_entries("s1") == [second]
    again = await registry.register(second, 1, REJECT)  # the same socket again
    assert (again.accepted, again.replaced) == (True, None)
    assert await registry.user_entries("t1", "u1") == [second]


@pytest_twisted.ensureDeferred
async def test_reject_at_limit_writes_nothing(cluster: Cluster) -> None:
    registry = await cluster.node()
    kept = [entry("d1"), entry("d2")]
    for e in kept:
        assert (await registry.register(e, 2, REJECT)).accepted
    refused = await registry.register(entry("d3"), 2, REJECT)
    assert (refused.accepted, refused.replaced, refused.evicted) == (False, None, ())
    assert by_socket(await registry.user_entries("t1", "u1")) == kept
    assert by_socket(await registry.server_entries("s1")) == kept


@pytest_twisted.ensureDeferred
async def test_evict_oldest(cluster: Cluster) -> None:
    registry = await cluster.node()
    young, old = entry("d1", connected_at=100), entry("d2", connected_at=50)
    await registry.register(young, 2, EVICT)
    await registry.register(old, 2, EVICT)
    new = entry("d3", connected_at=200)
    result = await registry.register(new, 2, EVICT)
    assert (result.accepted, result.replaced, result.evicted) == (True, None, (old,))
    assert by_socket(await registry.user_entries("t1", "u1")) == [young, new]
    assert old not in await registry.server_entries("s1")
    # Above the limit (it was lowered): the oldest ones go until the new one fits.
    result = await registry.register(entry("d4", connected_at=300), 1, EVICT)
    assert result.evicted == (young, new)
    assert [e.device_id for e in await registry.user_entries("t1", "u1")] == ["d4"]


@pytest_twisted.ensureDeferred
async def test_late_unregister_of_replaced_entry_keeps_replacement(cluster: Cluster) -> None:
    one, two = await cluster.nodes(2)
    first = entry(server="s1")
    second = entry(server="s2", connected_at=2000)
    await one.register(first, 2, REJECT)
    assert (await two.register(second, 2, REJECT)).replaced == first
    assert await one.unregister(first) is False
    assert await two.user_entries("t1", "u1") == [second]
    assert await one.server_entries("s1") == []
    assert await one.server_entries("s2") == [second]


@pytest.mark.parametrize("policy", [REJECT, EVICT])
@pytest_twisted.ensureDeferred
async def test_concurrent_registers_across_nodes(
    cluster: Cluster, policy: DeviceLimitPolicy
) -> None:
    nodes = await cluster.nodes(3)
    entries = [entry(f"d{i}", server=f"s{i % 3}", connected_at=i) for i in range(20)]
    results = await concurrently(
        *(nodes[i % 3].register(e, 5, policy) for i, e in enumerate(entries))
    )
    stored = await nodes[0].user_entries("t1", "u1")
    assert len(stored) == 5
    if policy is REJECT:
        assert sum(r.accepted for r in results) == 5
        assert {e.socket_id for e in stored} == {
            e.socket_id for e, r in zip(entries, results, strict=True) if r.accepted
        }
    else:
        assert all(r.accepted for r in results)
        evicted = [e for r in results for e in r.evicted]
        assert len(evicted) == 15 == len({e.socket_id for e in evicted})
        assert set(evicted) | set(stored) == set(entries)


TRICKY = [
    ("a:b", "c"),
    ("a", "b:c"),
    ("a%3Ab", "c"),
    ("t{1}", "u"),
    ("t", "{1}u"),
    ("tenant ü", "用户"),
    ("t1", "u1\n"),
    ("", ":"),
    (":", ""),
    ("t\ud800", "lone surrogate"),
]


@pytest_twisted.ensureDeferred
async def test_user_entries_are_isolated(cluster: Cluster) -> None:
    registry = await cluster.node()
    made = {}
    for tenant, user in [*TRICKY, ("t2", "u1"), ("t1", "u1")]:
        e = entry(device="d:1", tenant=tenant, user=user)
        assert (await registry.register(e, 1, REJECT)).accepted, (tenant, user)
        made[tenant, user] = e
    for (tenant, user), e in made.items():
        assert await registry.user_entries(tenant, user) == [e], (tenant, user)
    assert await registry.user_entries("t3", "u1") == []


@pytest_twisted.ensureDeferred
async def test_server_entries(cluster: Cluster) -> None:
    registry = await cluster.node()
    on_s1 = [entry(f"d{i}", user=f"u{i % 4}", server="s1") for i in range(20)]
    on_s2 = [entry("d1", user="other", server="s2")]
    for e in on_s1 + on_s2:
        await registry.register(e, 10, REJECT)
    assert by_socket(await registry.server_entries("s1")) == by_socket(on_s1)
    assert await registry.server_entries("s2") == on_s2
    assert await registry.server_entries("s3") == []


@pytest_twisted.ensureDeferred
async def test_touch(cluster: Cluster) -> None:
    registry = await cluster.node()
    e, other = entry("d1", last_activity=100), entry("d2", last_activity=100)
    await registry.register(e, 5, REJECT)
    await registry.register(other, 5, REJECT)
    await registry.touch([(e, 500), (other, 50)])  # never backwards
    stored = {x.device_id: x for x in await registry.user_entries("t1", "u1")}
    assert stored["d1"] == e.with_activity(500)
    assert stored["d2"] == other
    expected = by_socket([e.with_activity(500), other])
    assert by_socket(await registry.server_entries("s1")) == expected
    replacement = entry("d1", connected_at=2000, last_activity=2000)
    await registry.register(replacement, 5, REJECT)
    await registry.touch([(e, 9000)])  # replaced: skipped
    await registry.unregister(other)
    await registry.touch([(other, 9000)])  # removed: not resurrected
    assert await registry.user_entries("t1", "u1") == [replacement]
    await registry.touch([])


@pytest_twisted.ensureDeferred
async def test_find_stale(cluster: Cluster) -> None:
    registry = await cluster.node()
    a, b, c = (entry(f"d{i}", last_activity=t) for i, t in enumerate((100, 200, 300)))
    for e in (a, b, c):
        await registry.register(e, 5, REJECT)
    assert by_socket(await registry.find_stale(250, 10)) == [a, b]
    assert len(await registry.find_stale(250, 1)) == 1
    assert await registry.find_stale(100, 10) == []  # strictly older
    assert await registry.find_stale(250, 0) == []
    await registry.touch([(a, 400)])
    assert await registry.find_stale(250, 10) == [b]
    await registry.unregister(b)
    assert await registry.find_stale(250, 10) == []


@pytest_twisted.ensureDeferred
async def test_restore(cluster: Cluster) -> None:
    mine, theirs = await cluster.nodes(2)
    await mine.acquire_lease("s1", 5.0)
    kept, lost, older = (entry(f"d{i}", connected_at=1000) for i in range(3))
    for e in (kept, lost, older):
        await mine.register(e, 5, REJECT)
    assert await mine.restore([kept, lost, older]) == []  # idempotent
    assert await mine.restore([kept, lost, older]) == []
    newer = entry("d1", server="s2", connected_at=2000)
    stale = entry("d2", server="s2", connected_at=10)
    await theirs.register(newer, 5, REJECT)
    await theirs.register(stale, 5, REJECT)
    # ours lost to the newer d1; the stale d2 lost to ours: both connections must close
    assert by_socket(await mine.restore([kept, lost, older])) == by_socket([lost, stale])
    assert by_socket(await mine.user_entries("t1", "u1")) == by_socket([kept, newer, older])
    assert await mine.server_entries("s2") == [newer]


# -- node leases -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_acquire_and_renew_held(cluster: Cluster) -> None:
    registry = await cluster.node()
    assert await registry.acquire_lease("s1", TTL) == []
    for _ in range(3):
        await sleep(TTL / 3)
        assert await registry.renew_lease() is LeaseState.HELD
    assert await registry.expired_servers() == []


@pytest_twisted.ensureDeferred
async def test_renew_without_lease_is_fenced(cluster: Cluster) -> None:
    registry = await cluster.node()
    with pytest.raises(Fenced):
        await registry.renew_lease()


@pytest_twisted.ensureDeferred
async def test_expired_then_renewed_is_reacquired(cluster: Cluster) -> None:
    node, watcher = await cluster.nodes(2)
    await node.acquire_lease("s1", TTL)
    e = entry()
    await node.register(e, 5, REJECT)
    await expire()
    assert await watcher.expired_servers() == ["s1"]
    with pytest.raises(Fenced):
        await node.register(entry("d2"), 5, REJECT)
    assert await node.renew_lease() is LeaseState.REACQUIRED
    assert await node.renew_lease() is LeaseState.HELD
    assert await watcher.expired_servers() == []
    assert await node.restore([e]) == []
    assert await node.user_entries("t1", "u1") == [e]


@pytest_twisted.ensureDeferred
async def test_reap_after_expiry(cluster: Cluster) -> None:
    dead, alive = await cluster.nodes(2)
    await dead.acquire_lease("s1", TTL)
    await alive.acquire_lease("s2", 5.0)
    doomed = [entry(f"d{i}", user=f"u{i % 3}", server="s1") for i in range(17)]
    survivors = [entry(f"x{i}", user=f"u{i % 3}", server="s2") for i in range(4)]
    for e in doomed:
        await dead.register(e, 20, REJECT)
    for e in survivors:
        await alive.register(e, 20, REJECT)
    await expire()
    assert await alive.expired_servers() == ["s1"]
    assert by_socket(await alive.reap("s1")) == by_socket(doomed)
    assert await alive.expired_servers() == []
    assert await alive.server_entries("s1") == []
    assert by_socket(await alive.server_entries("s2")) == by_socket(survivors)
    # The paused node wakes up: it learns it was reaped and cannot write.
    assert await dead.renew_lease() is LeaseState.REAPED
    with pytest.raises(Fenced):
        await dead.register(entry("d99", server="s1"), 20, REJECT)
    with pytest.raises(Fenced):
        await dead.restore(doomed)
    assert await dead.renew_lease() is LeaseState.REAPED
    assert await alive.server_entries("s1") == []
    assert await alive.reap("s1") == []


@pytest_twisted.ensureDeferred
async def test_reap_of_a_live_node_does_nothing(cluster: Cluster) -> None:
    live, reaper = await cluster.nodes(2)
    await live.acquire_lease("s1", 5.0)
    e = entry()
    await live.register(e, 5, REJECT)
    assert await reaper.reap("s1") is None
    assert await reaper.user_entries("t1", "u1") == [e]
    assert await live.renew_lease() is LeaseState.HELD


@pytest_twisted.ensureDeferred
async def test_concurrent_reapers_remove_each_entry_once(cluster: Cluster) -> None:
    dead, first, second = await cluster.nodes(3)
    await dead.acquire_lease("s1", TTL)
    doomed = [entry(f"d{i}", user=f"u{i % 5}") for i in range(40)]
    for e in doomed:
        await dead.register(e, 40, REJECT)
    await expire()
    a, b = await concurrently(first.reap("s1"), second.reap("s1"))
    assert not {e.socket_id for e in a} & {e.socket_id for e in b}  # type: ignore[union-attr]
    assert by_socket(a + b) == by_socket(doomed)  # type: ignore[operator]
    assert await dead.renew_lease() is LeaseState.REAPED


@pytest_twisted.ensureDeferred
async def test_new_incarnation_reaps_the_old_one(cluster: Cluster) -> None:
    old, new = await cluster.nodes(2)
    await old.acquire_lease("s1", 5.0)
    left = [entry(f"d{i}") for i in range(10)]
    for e in left:
        await old.register(e, 10, REJECT)
    assert by_socket(await new.acquire_lease("s1", 5.0)) == by_socket(left)
    assert await new.user_entries("t1", "u1") == []
    assert await old.renew_lease() is LeaseState.REAPED
    with pytest.raises(Fenced):
        await old.register(entry("d1"), 10, REJECT)
    fresh = entry("d1")
    assert (await new.register(fresh, 10, REJECT)).accepted
    assert await new.renew_lease() is LeaseState.HELD
    # The old process stopping late must not take the new one's entries along.
    await old.release_lease()
    assert await new.server_entries("s1") == [fresh]
    assert await new.renew_lease() is LeaseState.HELD


@pytest_twisted.ensureDeferred
async def test_entries_written_without_a_lease_can_be_reaped(cluster: Cluster) -> None:
    writer, reaper = await cluster.nodes(2)
    e = entry(server="s9")
    assert (await writer.register(e, 1, REJECT)).accepted  # no lease: never fenced
    assert await reaper.expired_servers() == ["s9"]
    assert await reaper.reap("s9") == [e]
    assert await reaper.expired_servers() == []


@pytest_twisted.ensureDeferred
async def test_release_lease_removes_our_entries(cluster: Cluster) -> None:
    leaving, other = await cluster.nodes(2)
    await leaving.acquire_lease("s1", 5.0)
    await other.acquire_lease("s2", 5.0)
    ours = [entry(f"d{i}", server="s1") for i in range(15)]
    theirs = entry("x", server="s2")
    for e in ours:
        await leaving.register(e, 20, REJECT)
    await other.register(theirs, 20, REJECT)
    await leaving.release_lease()
    assert await other.user_entries("t1", "u1") == [theirs]
    assert await other.server_entries("s1") == []
    assert await other.expired_servers() == []
    assert await other.reap("s1") == []
