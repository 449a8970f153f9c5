"""The connection registry: which devices of which user are connected where.

One interface, two backends (:mod:`.memory` for a single node, :mod:`.redis` for a
cluster), both held to one contract test suite.  The registry is the source of
truth for device limits and for "where does this user live", so every write that
could race (register with its limit check, unregister of a replaced connection,
reaping a dead node) is one atomic step in the backend.

Node lifecycle is part of the same interface because it fences the writes: a
node holds a lease identified by a generation token; once another node has
reaped it, every write carrying the old token is refused with :class:`Fenced`,
so a node that wakes up late can never resurrect entries that were removed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "DeviceLimitPolicy",
    "Entry",
    "Fenced",
    "LeaseState",
    "Registration",
    "Registry",
    "RegistryUnavailable",
]


class RegistryUnavailable(Exception):
    """The backend did not answer in time or is unreachable.

    Callers decide whether to fail open (keep serving local connections) or to
    refuse; the registry itself never retries behind their back.
    """


class Fenced(Exception):
    """This node's lease is gone (it was reaped as dead): its writes are refused.

    The node must close its connections and take a new lease; see
    :meth:`Registry.renew_lease`.
    """


class DeviceLimitPolicy(enum.Enum):
    """What to do when a user already has ``max_devices`` other devices connected."""

    REJECT = "reject"
    EVICT_OLDEST = "evict-oldest"


class LeaseState(enum.Enum):
    """Outcome of renewing a node lease."""

    HELD = "held"
    #: The lease had vanished without a reap (expired while we were paused, or the
    #: backend restarted empty); it was taken again and the caller must re-register
    #: its live connections with :meth:`Registry.restore`.
    REACQUIRED = "reacquired"
    #: Another node reaped us: our entries are gone for good.  Close every local
    #: connection (clients reconnect and register afresh), then acquire a new lease.
    REAPED = "reaped"


@attrs.frozen(slots=True)
class Entry:
    """One live connection of one device.

    Times are integer milliseconds since the epoch, as in the JSON other
    services read from the registry.
    """

    socket_id: str
    user_id: str
    tenant_id: str
    device_id: str
    server_id: str
    connected_at: int
    last_activity: int

    def to_json(self) -> str:
        """The stored form: compact JSON with camelCase keys, in a fixed order."""
        return _compact.encode(
            {
                "socketId": self.socket_id,
                "userId": self.user_id,
                "tenantId": self.tenant_id,
                "deviceId": self.device_id,
                "serverId": self.server_id,
                "connectedAt": self.connected_at,
                "lastActivity": self.last_activity,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Entry:
        """Parse the stored form; raises ``ValueError`` on anything else."""
        try:
            raw = json.loads(text)
            return cls(
                socket_id=_str(raw["socketId"]),
                user_id=_str(raw["userId"]),
                tenant_id=_str(raw["tenantId"]),
                device_id=_str(raw["deviceId"]),
                server_id=_str(raw["serverId"]),
                connected_at=_int(raw["connectedAt"]),
                last_activity=_int(raw["lastActivity"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a registry entry: {e}") from None

    def with_activity(self, last_activity: int) -> Entry:
        """A copy with a newer ``last_activity``."""
        return attrs.evolve(self, last_activity=last_activity)


_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return int(value)


@attrs.frozen
class Registration:
    """The result of :meth:`Registry.register`.

    ``replaced`` and ``evicted`` are connections that no longer hold a registry
    entry; whoever owns them (``entry.server_id``) must close them.
    """

    accepted: bool
    #: The previous connection of the same device, now replaced by the new one.
    replaced: Entry | None = None
    #: The user's oldest devices, dropped to make room (policy ``evict-oldest``);
    #: more than one only when the user held more devices than the limit allows.
    evicted: tuple[Entry, ...] = ()


@runtime_checkable
class Registry(Protocol):
    """Storage of connection entries and node leases.

    Every method is a coroutine; a backend that cannot answer raises
    :class:`RegistryUnavailable`, a fenced node gets :class:`Fenced` on writes.
    """

    # -- connections -------------------------------------------------------

    async def register(
        self, entry: Entry, max_devices: int, policy: DeviceLimitPolicy
    ) -> Registration:
        """Atomically add ``entry`` under its user, enforcing the device limit.

        A device already registered is replaced (it does not count twice).
        Otherwise, with ``max_devices`` devices already present, ``REJECT``
        refuses (``accepted=False``, nothing written) and ``EVICT_OLDEST``
        removes the device with the oldest ``connected_at`` first.
        """
        ...

    async def unregister(self, entry: Entry) -> bool:
        """Remove ``entry`` if, and only if, its device still belongs to its socket.

        Returns whether something was removed.  A late disconnect of a replaced
        connection therefore never deletes its replacement.  Never fenced: removing
        our own entries is always safe.
        """
        ...

    async def user_entries(self, tenant_id: str, user_id: str) -> list[Entry]:
        """All live entries of one user of one tenant (empty for unknown users)."""
        ...

    async def server_entries(self, server_id: str) -> list[Entry]:
        """All entries owned by one node."""
        ...

    async def touch(self, activity: Iterable[tuple[Entry, int]]) -> None:
        """Store newer ``last_activity`` times, in one batch.

        Entries that were replaced or removed meanwhile are skipped.
        """
        ...

    async def find_stale(self, older_than: int, limit: int) -> list[Entry]:
        """Up to ``limit`` entries whose stored ``last_activity`` is before ``older_than``."""
        ...

    async def restore(self, entries: Sequence[Entry]) -> list[Entry]:
        """Put back this node's live entries after the backend lost them.

        Idempotent.  Returns the connections that lost their device to another
        one and must be closed: ours where the same device holds a newer entry
        (a later ``connected_at``), which is not written, and the older entries
        ours replaced (the device reconnected while the backend was away).
        Fenced like :meth:`register`.
        """
        ...

    # -- node leases -------------------------------------------------------

    async def acquire_lease(self, server_id: str, ttl: float) -> list[Entry]:
        """Take the lease of ``server_id`` with a fresh generation.

        Writes of this node are fenced by that generation from now on.  Entries
        left by an earlier incarnation of the same server id (a crash and a quick
        restart) are reaped and returned: their connections died with it.
        """
        ...

    async def renew_lease(self) -> LeaseState:
        """Extend our lease; see :class:`LeaseState` for what to do next."""
        ...

    async def release_lease(self) -> None:
        """Clean stop: remove all of our entries and give up the lease."""
        ...

    async def expired_servers(self) -> list[str]:
        """Nodes that are known but whose lease has expired (candidates for reaping)."""
        ...

    async def reap(self, server_id: str) -> list[Entry] | None:
        """Remove every entry of a node whose lease expired; returns what was removed.

        Fenced against the node itself: once reaping starts the node can no longer
        write with its old generation.  Two reapers racing remove each entry once.
        Does nothing and returns ``None`` if the node's lease is held again.
        """
        ...
