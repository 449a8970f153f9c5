"""Node leases, reconciliation and reaping, on the memory model of the registry.

Two nodes share one MemoryStore and one Clock, so every transition of the
lease state machine can be driven deterministically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from caas_socket.app import CaasApp
from caas_socket.app.devices import LocalKicker
from caas_socket.auth import JWTVerifier, KeySet, mint_token
from caas_socket.cluster.lifecycle import NodeLifecycle
from caas_socket.registry.health import BackendHealth
from caas_socket.registry.interfaces import (
    DeviceLimitPolicy,
    Entry,
    LeaseState,
    Registration,
    RegistryUnavailable,
)
from caas_socket.registry.memory import MemoryRegistry, MemoryStore
from caas_socket.server import Settings, SocketServer
from tests.support.fakes import RecordingTransport, open_client

SECRET = b"unit-test-secret-of-at-least-32-bytes!!"
TTL = 10.0


class Switchable(MemoryRegistry):
    """The memory registry, with a switch that makes every call fail like a Redis outage."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise RegistryUnavailable("down")

    async def register(
        self, entry: Entry, max_devices: int, policy: DeviceLimitPolicy
    ) -> Registration:
        self._check()
        return await super().register(entry, max_devices, policy)

    async def unregister(self, entry: Entry) -> bool:
        self._check()
        return await super().unregister(entry)

    async def renew_lease(self) -> LeaseState:
        self._check()
        return await super().renew_lease()

    async def restore(self, entries: Sequence[Entry]) -> list[Entry]:
        self._check()
        return await super().restore(entries)

    async def server_entries(self, server_id: str) -> list[Entry]:
        self._check()
        return await super().server_entries(server_id)

    async def touch(self, activity: Iterable[tuple[Entry, int]]) -> None:
        self._check()
        await super().touch(activity)


class Node:
    def __init__(self, name: str, store: MemoryStore, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.server = SocketServer(clock, Settings())
        self.registry = Switchable(store)
        self.local = LocalKicker()
        self.health = BackendHealth(clock)
        self.reaped: list[Entry] = []
        CaasApp(
            self.server,
            verifier=JWTVerifier(keys=KeySet.from_secret(SECRET), now=clock.seconds),
            registry=self.registry,
            server_id=name,
            clock=clock,
            max_devices=5,
            policy=DeviceLimitPolicy.REJECT,
            local_kicker=self.local,
            health=self.health,
        )
        self.lifecycle = NodeLifecycle(
            clock,
            self.registry,
            self.local,
            self.health,
            server_id=name,
            ttl=TTL,
            on_reaped=self.reaped.extend,
        )
        self.lifecycle.startService()

    def connect(self, device: str, user: str = "alice") -> RecordingTransport:
        transport, _ = open_client(self.server, {"deviceId": device})
        token = mint_token(SECRET, sub=user, tenant_id="acme", now=self.clock.seconds)
        transport.receive("40" + json.dumps({"token": token}))
        (answer,) = transport.take()
        assert answer.startswith('40{"sid"'), answer
        return transport

    def pause(self) -> None:
        """Like SIGSTOP: the node's loops stop running."""
        self.lifecycle.stopService()


def cluster() -> tuple[Clock, MemoryStore, Node, Node]:
    clock = Clock()
    clock.advance(1000)
    store = MemoryStore(clock)
    return clock, store, Node("a", store, clock), Node("b", store, clock)


def devices(store: MemoryStore) -> dict[str, str]:
    """device id -> server id, for user alice."""
    return {d: e.server_id for d, e in store.users.get(("acme", "alice"), {}).items()}


def run(coro: Any) -> None:
    Deferred.fromCoroutine(coro)


def test_both_nodes_hold_leases_and_renew_them() -> None:
    clock, store, a, b = cluster()
    assert a.lifecycle.leased and b.lifecycle.leased
    clock.pump([1.0] * 60)
    assert store.lease_alive("a") and store.lease_alive("b")


def test_a_dead_node_is_reaped_within_one_and_a_quarter_ttl() -> None:
    clock, store, a, b = cluster()
    a.connect("phone")
    b.connect("laptop")
    a.pause()  # stops renewing, like a killed node
    died_at = clock.seconds()
    while devices(store).get("phone"):
        clock.advance(0.5)
        assert clock.seconds() - died_at <= 1.25 * TTL + TTL / 3, "not reaped in time"
    assert devices(store) == {"laptop": "b"}
    assert [e.device_id for e in b.reaped] == ["phone"]


def test_a_paused_node_that_was_reaped_does_not_resurrect_its_entries() -> None:
    clock, store, a, _b = cluster()
    phone = a.connect("phone")
    a.pause()
    clock.pump([0.5] * 30)  # b reaps a
    assert devices(store) == {}
    a.lifecycle.startService()  # SIGCONT: the first renewal says REAPED
    assert phone.closed, "the reaped node must close its connections"
    assert devices(store) == {}
    assert a.lifecycle.leased  # with a new lease it serves again
    a.connect("phone")
    assert devices(store) == {"phone": "a"}


def test_a_lease_that_vanished_without_a_reap_restores_the_entries() -> None:
    clock, store, a, b = cluster()
    a.connect("phone")
    b.connect("laptop")
    # Redis restarted empty: everything is gone at once.
    store.users.clear()
    store.servers.clear()
    store.leases.clear()
    clock.advance(TTL / 3 + 0.1)
    assert devices(store) == {"phone": "a", "laptop": "b"}


def test_registration_fails_open_and_reconciles_when_the_registry_is_back() -> None:
    clock, store, a, _ = cluster()
    a.registry.down = True
    phone = a.connect("phone")  # accepted although nothing could be written
    gone = a.connect("tablet")
    assert devices(store) == {}
    assert not a.health.available
    gone.close()  # its unregister fails too
    a.registry.down = False
    clock.advance(TTL / 3 + 0.1)
    assert devices(store) == {"phone": "a"}
    assert a.health.available and not a.health.dirty
    assert not phone.closed


def test_reconcile_removes_ghosts_left_by_a_failed_unregister() -> None:
    clock, store, a, _ = cluster()
    phone = a.connect("phone")
    a.registry.down = True
    phone.close()
    a.registry.down = False
    assert devices(store) == {"phone": "a"}  # a ghost
    clock.advance(TTL / 3 + 0.1)
    assert devices(store) == {}


def test_a_restored_entry_that_lost_to_a_newer_connection_is_kicked() -> None:
    clock, store, a, b = cluster()
    old = a.connect("phone")
    store.users.clear()
    store.servers.clear()
    store.leases.pop("a")
    clock.advance(1)
    b.connect("phone")  # the same device reconnected elsewhere, meanwhile
    clock.advance(TTL / 3)
    assert devices(store) == {"phone": "b"}
    assert old.take()[-2:] == ['42["caas:kicked",{"reason":"replaced"}]', "41"]
