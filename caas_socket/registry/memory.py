"""In-memory registry: the embedded default for a single node.

It is also the reference model of the contract: several :class:`MemoryRegistry`
handles may share one :class:`MemoryStore` to play several nodes, leases expire
on the given clock, and fencing behaves exactly as in the Redis backend.
Every operation completes synchronously; the methods are coroutines only to
share the :class:`~.interfaces.Registry` shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime

from .interfaces import (
    DeviceLimitPolicy,
    Entry,
    Fenced,
    LeaseState,
    Registration,
)

__all__ = ["MemoryRegistry", "MemoryStore"]


@attrs.define
class _Lease:
    generation: str
    expires_at: float


@attrs.define
class MemoryStore:
    """The shared state; one per process in production, one per test cluster."""

    clock: IReactorTime
    users: dict[tuple[str, str], dict[str, Entry]] = attrs.Factory(dict)
    servers: dict[str, dict[str, Entry]] = attrs.Factory(dict)
    leases: dict[str, _Lease] = attrs.Factory(dict)
    reaped: dict[str, str] = attrs.Factory(dict)

    def lease_alive(self, server_id: str) -> bool:
        lease = self.leases.get(server_id)
        return lease is not None and lease.expires_at > self.clock.seconds()

    def put(self, entry: Entry) -> None:
        self.users.setdefault((entry.tenant_id, entry.user_id), {})[entry.device_id] = entry
        self.servers.setdefault(entry.server_id, {})[entry.socket_id] = entry

    def remove(self, entry: Entry) -> bool:
        """Remove ``entry`` if its device still belongs to its socket."""
        self.servers.get(entry.server_id, {}).pop(entry.socket_id, None)
        key = (entry.tenant_id, entry.user_id)
        devices = self.users.get(key)
        if devices is None:
            return False
        current = devices.get(entry.device_id)
        if current is None or current.socket_id != entry.socket_id:
            return False
        del devices[entry.device_id]
        if not devices:
            del self.users[key]
        return True

    def remove_server(self, server_id: str) -> list[Entry]:
        return [e for e in list(self.servers.pop(server_id, {}).values()) if self.remove(e)]


class MemoryRegistry:
    """A :class:`~.interfaces.Registry` over a :class:`MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._server_id: str | None = None
        self._generation: str | None = None
        self._ttl = 0.0

    @property
    def store(self) -> MemoryStore:
        """The shared state (read by the single-node presence store)."""
        return self._store

    @classmethod
    def standalone(cls, clock: IReactorTime) -> MemoryRegistry:
        """A registry with a store of its own: the single-node default."""
        return cls(MemoryStore(clock))

    def _check_fence(self) -> None:
        if self._generation is None:
            return
        lease = self._store.leases.get(self._server_id or "")
        if (
            lease is None
            or lease.generation != self._generation
            or not self._store.lease_alive(self._server_id or "")
        ):
            raise Fenced(f"lease of {self._server_id} is not held")

    # -- connections -------------------------------------------------------

    async def register(
        self, entry: Entry, max_devices: int, policy: DeviceLimitPolicy
    ) -> Registration:
        self._check_fence()
        store = self._store
        devices = store.users.get((entry.tenant_id, entry.user_id), {})
        previous = devices.get(entry.device_id)
        evicted: list[Entry] = []
        if previous is None and len(devices) >= max_devices:
            if policy is DeviceLimitPolicy.REJECT:
                return Registration(accepted=False)
            by_age = sorted(devices.values(), key=lambda e: (e.connected_at, e.socket_id))
            evicted = by_age[: len(devices) - max_devices + 1]
            for old in evicted:
                store.remove(old)
        if previous is not None:
            store.remove(previous)
        store.put(entry)
        replaced = (
            previous if previous is not None and previous.socket_id != entry.socket_id else None
        )
        return Registration(accepted=True, replaced=replaced, evicted=tuple(evicted))

    async def unregister(self, entry: Entry) -> bool:
        return self._store.remove(entry)

    async def user_entries(self, tenant_id: str, user_id: str) -> list[Entry]:
        return list(self._store.users.get((tenant_id, user_id), {}).values())

    async def server_entries(self, server_id: str) -> list[Entry]:
        return list(self._store.servers.get(server_id, {}).values())

    async def touch(self, activity: Iterable[tuple[Entry, int]]) -> None:
        store = self._store
        for entry, when in activity:
            current = store.users.get((entry.tenant_id, entry.user_id), {}).get(entry.device_id)
            if (
                current is not None
                and current.socket_id == entry.socket_id
                and when > current.last_activity
            ):
                store.put(current.with_activity(when))

    async def find_stale(self, older_than: int, limit: int) -> list[Entry]:
        stale: list[Entry] = []
        if limit <= 0:
            return stale
        for devices in self._store.users.values():
            for entry in devices.values():
                if entry.last_activity < older_than:
                    stale.append(entry)
                    if len(stale) >= limit:
                        return stale
        return stale

    async def restore(self, entries: Sequence[Entry]) -> list[Entry]:
        self._check_fence()
        store = self._store
        lost: list[Entry] = []
        for entry in entries:
            current = store.users.get((entry.tenant_id, entry.user_id), {}).get(entry.device_id)
            if current is not None and current.socket_id != entry.socket_id:
                if current.connected_at > entry.connected_at:
                    lost.append(entry)
                    continue
                store.remove(current)
                lost.append(current)
            store.put(entry)
        return lost

    # -- node leases -------------------------------------------------------

    async def acquire_lease(self, server_id: str, ttl: float) -> list[Entry]:
        store = self._store
        old = store.leases.get(server_id)
        if old is not None:
            store.reaped[server_id] = old.generation
        removed = store.remove_server(server_id)
        self._server_id, self._ttl = server_id, ttl
        self._generation = uuid.uuid4().hex
        store.leases[server_id] = _Lease(self._generation, store.clock.seconds() + ttl)
        return removed

    async def renew_lease(self) -> LeaseState:
        store, server_id = self._store, self._server_id
        if server_id is None or self._generation is None:
            raise Fenced("no lease was acquired")
        lease = store.leases.get(server_id)
        expires_at = store.clock.seconds() + self._ttl
        if (
            lease is not None
            and lease.generation == self._generation
            and store.lease_alive(server_id)
        ):
            lease.expires_at = expires_at
            return LeaseState.HELD
        if store.reaped.get(server_id) == self._generation:
            return LeaseState.REAPED
        if lease is not None and lease.generation != self._generation:
            # Someone took our server id over (a restart of the same id): we are dead to it.
            return LeaseState.REAPED
        store.leases[server_id] = _Lease(self._generation, expires_at)
        return LeaseState.REACQUIRED

    async def release_lease(self) -> None:
        if self._server_id is None:
            return
        store = self._store
        lease = store.leases.get(self._server_id)
        if lease is not None and lease.generation != self._generation:
            # A new incarnation of our server id holds it: the entries under the
            # id are its own, and ours were reaped when it took over.
            self._generation = None
            return
        store.remove_server(self._server_id)
        if lease is not None:
            del store.leases[self._server_id]
        self._generation = None

    async def expired_servers(self) -> list[str]:
        store = self._store
        known = set(store.leases) | {s for s, socks in store.servers.items() if socks}
        return sorted(s for s in known if not store.lease_alive(s))

    async def reap(self, server_id: str) -> list[Entry] | None:
        store = self._store
        if store.lease_alive(server_id):
            return None
        lease = store.leases.pop(server_id, None)
        if lease is not None:
            store.reaped[server_id] = lease.generation
        return store.remove_server(server_id)
