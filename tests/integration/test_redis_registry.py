"""Redis-only behaviour: key layout, restarts, outages, big reaps, TLS and Sentinel.

The shared semantics are in ``tests/contract``; this module checks what only a
real Redis can show.  It has its own ``redis-server`` (module fixture) and
starts extra servers (TLS, Sentinel) where a test needs them.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from caas_socket.redis_connection import RedisConnection, connect
from caas_socket.registry.interfaces import (
    DeviceLimitPolicy,
    Entry,
    LeaseState,
    RegistryUnavailable,
)
from caas_socket.registry.redis import RedisRegistry
from tests.support.redis_server import RedisServer

T = TypeVar("T")
REJECT = DeviceLimitPolicy.REJECT
_sockets = itertools.count()


def entry(device: str = "d1", user: str = "u1", tenant: str = "t1", server: str = "s1") -> Entry:
    return Entry(f"sock-{next(_sockets):06d}", user, tenant, device, server, 1000, 1000)


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def eventually(call: Callable[[], Awaitable[T]], within: float = 5.0) -> T:
    """Retry ``call`` while Redis is unavailable (reconnecting), for at most ``within`` s."""
    deadline = reactor.seconds() + within
    while True:
        try:
            return await call()
        except RegistryUnavailable:
            if reactor.seconds() > deadline:
                raise
            await sleep(0.05)


@pytest.fixture
def opened() -> Iterator[list[RedisConnection]]:
    """Connections opened by a test, closed after it."""
    connections: list[RedisConnection] = []
    yield connections
    for c in connections:
        pytest_twisted.blockon(Deferred.fromCoroutine(c.disconnect()))


async def registry_on(
    url: str, opened: list[RedisConnection], timeout: float = 0.5, **kwargs: object
) -> RedisRegistry:
    connection = await connect(url, reactor, pool_size=2, timeout=timeout)
    opened.append(connection)
    return RedisRegistry(connection, reactor, timeout=timeout, **kwargs)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_key_layout(clean_redis: RedisServer, opened: list[RedisConnection]) -> None:
    registry = await registry_on(clean_redis.url, opened, prefix="")
    await registry.acquire_lease("s1", 5.0)
    e = entry("dev1", user="check-1", tenant="tc")
    tricky = entry("dev:2", user="b:c", tenant="a")
    await registry.register(e, 5, REJECT)
    await registry.register(tricky, 5, REJECT)
    redis = clean_redis.command
    assert redis("HGET", "conn:tc:check-1", "dev1") == e.to_json().encode()
    assert redis("HGET", "conn:a:b%3Ac", "dev:2") == tricky.to_json().encode()
    assert set(redis("SMEMBERS", "server:s1:sockets")) == {  # type: ignore[arg-type]
        e.socket_id.encode(),
        tricky.socket_id.encode(),
    }
    assert redis("HGET", "server:s1:refs", e.socket_id) == b"conn:tc:check-1\ndev1"
    assert redis("ZSCORE", "activity", b"conn:tc:check-1\ndev1") == b"1000"
    generation = redis("HGET", "nodes", "s1")
    assert redis("GET", "node:s1") == generation
    assert 4000 < redis("PTTL", "node:s1") <= 5000  # type: ignore[operator]
    assert redis("HGET", "servers", "s1") == b"s1"
    await registry.release_lease()
    assert redis("KEYS", "*") == [b"servers"]  # forgotten by the next expired_servers
    assert await registry.expired_servers() == []
    assert redis("KEYS", "*") == []


@pytest_twisted.ensureDeferred
async def test_prefixes_separate_deployments(
    clean_redis: RedisServer, opened: list[RedisConnection]
) -> None:
    blue = await registry_on(clean_redis.url, opened, prefix="blue:")
    green = await registry_on(clean_redis.url, opened, prefix="green:")
    e = entry()
    await blue.register(e, 1, REJECT)
    assert (await green.register(entry(), 1, REJECT)).accepted
    assert await blue.user_entries("t1", "u1") == [e]
    assert clean_redis.command("EXISTS", "blue:conn:t1:u1", "green:conn:t1:u1") == 2


@pytest_twisted.ensureDeferred
async def test_survives_a_restart_empty(
    clean_redis: RedisServer, opened: list[RedisConnection]
) -> None:
    registry = await registry_on(clean_redis.url, opened)
    await registry.acquire_lease("s1", 5.0)
    live = [entry(f"d{i}") for i in range(3)]
    for e in live:
        await registry.register(e, 5, REJECT)
    clean_redis.restart()  # empty: no data, no scripts
    assert await eventually(registry.renew_lease) is LeaseState.REACQUIRED
    assert await registry.restore(live) == []
    assert sorted(await registry.user_entries("t1", "u1"), key=str) == sorted(live, key=str)
    assert len(await registry.server_entries("s1")) == 3
    assert await registry.renew_lease() is LeaseState.HELD


@pytest_twisted.ensureDeferred
async def test_scripts_reload_after_script_flush(
    clean_redis: RedisServer, opened: list[RedisConnection]
) -> None:
    registry = await registry_on(clean_redis.url, opened)
    await registry.register(entry("d1"), 5, REJECT)
    clean_redis.command("SCRIPT", "FLUSH")
    assert (await registry.register(entry("d2"), 5, REJECT)).accepted


@pytest.mark.parametrize("fault", ["stopped", "paused"])
@pytest_twisted.ensureDeferred
async def test_outage_fails_within_the_timeout(
    clean_redis: RedisServer, opened: list[RedisConnection], fault: str
) -> None:
    registry = await registry_on(clean_redis.url, opened, timeout=0.3)
    await registry.acquire_lease("s1", 5.0)
    (clean_redis.stop if fault == "stopped" else clean_redis.pause)()
    try:
        for call in (
            lambda: registry.user_entries("t1", "u1"),
            lambda: registry.register(entry(), 5, REJECT),
            registry.renew_lease,
        ):
            started = reactor.seconds()
            with pytest.raises(RegistryUnavailable):
                await call()
            assert reactor.seconds() - started < 0.3 + 0.2
    finally:
        clean_redis.start() if fault == "stopped" else clean_redis.resume()
    # A restart comes back empty (the lease is gone); a pause loses nothing.
    expected = LeaseState.REACQUIRED if fault == "stopped" else LeaseState.HELD
    assert await eventually(registry.renew_lease) is expected
    assert (await registry.register(entry(), 5, REJECT)).accepted


@pytest_twisted.ensureDeferred
async def test_a_big_node_is_reaped_in_batches(
    clean_redis: RedisServer, opened: list[RedisConnection]
) -> None:
    dead = await registry_on(clean_redis.url, opened, timeout=2.0)
    reaper = await registry_on(clean_redis.url, opened, timeout=2.0)
    await dead.acquire_lease("big", 0.3)
    entries = [entry(f"d{i}", user=f"u{i % 500}", server="big") for i in range(2500)]
    assert await dead.restore(entries) == []  # three script calls of <= 1000
    await sleep(0.45)
    removed = await reaper.reap("big")
    assert len(removed) == 2500 == len({e.socket_id for e in removed})
    assert clean_redis.command("KEYS", "caas:conn:*") == []
    assert clean_redis.command("PTTL", "caas:reaped:big") > 0  # type: ignore[operator]
    assert await dead.renew_lease() is LeaseState.REAPED


# -- TLS ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_verifies_the_server_name(
    tls_redis: tuple[RedisServer, int, Path], opened: list[RedisConnection]
) -> None:
    _, port, ca = tls_redis
    good = await connect(f"rediss://localhost:{port}/0?ca={ca}", reactor, timeout=2.0)
    opened.append(good)
    assert await good.execute("PING") == b"PONG"
    for bad in (
        f"rediss://127.0.0.1:{port}/0?ca={ca}",  # the certificate names localhost only
        f"rediss://localhost:{port}/0",  # our CA is not a platform CA
    ):
        with pytest.raises(RegistryUnavailable):
            await connect(bad, reactor, pool_size=1, timeout=0.5)


# -- Sentinel -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sentinel_finds_the_master(
    clean_redis: RedisServer, opened: list[RedisConnection]
) -> None:
    sentinel = RedisServer(
        config=[f"sentinel monitor mymaster {clean_redis.host} {clean_redis.port} 1"],
        sentinel=True,
    )
    sentinel.start()
    try:
        url = f"redis+sentinel://{sentinel.host}:{sentinel.port}/mymaster/0"
        registry = await registry_on(url, opened, timeout=2.0)
        e = entry()
        assert (await registry.register(e, 1, REJECT)).accepted
        assert clean_redis.command("HGET", "caas:conn:t1:u1", "d1") == e.to_json().encode()
    finally:
        sentinel.close()
