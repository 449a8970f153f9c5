"""What ``caas-socketctl`` reads from the registry, and its one write (reaping dead nodes).

Reads follow the key layout of ``docs/REDIS.rst``: those names are a
documented interface for tools, and the registry has no listing of nodes of
its own.  The one write, reaping, goes through :meth:`RedisRegistry.reap
<caas_socket.registry.redis.RedisRegistry.reap>`, the fenced script the nodes
use, so the tool can never remove what a live node still owns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults

from .cluster.presence import RedisPresenceStore
from .naming import escape
from .redis_connection import RedisConnection
from .registry.interfaces import Entry
from .registry.redis import RedisRegistry

__all__ = ["NodeState", "RegistryInspector", "entry_json", "text"]


def text(raw: bytes) -> str:
    """Ids are stored as UTF-8 of whatever clients sent, lone surrogates included."""
    return raw.decode("utf-8", "surrogatepass")


def pairs(flat: list[bytes]) -> dict[str, bytes]:
    """A flat HGETALL/HSCAN reply as a dict (the pool returns raw replies)."""
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


@attrs.frozen
class NodeState:
    """One server id known to the registry and the state of its lease.

    ``lease`` is ``alive`` (``node:{server}`` exists), ``expired`` (a lease
    record without a live lease: dead, not reaped yet) or ``none`` (no record;
    entries may remain from a reap cut short).
    """

    server_id: str
    escaped: str
    lease: str
    ttl_ms: int | None
    generation: str | None
    record: str | None
    entries: int
    reaping: int

    @property
    def stale(self) -> bool:
        """What ``expired_servers`` would hand to ``reap``."""
        return self.lease != "alive" and bool(self.record or self.entries or self.reaping)

    def to_json(self) -> dict[str, Any]:
        return {
            "serverId": self.server_id,
            "lease": self.lease,
            "ttlMs": self.ttl_ms,
            "generation": self.generation,
            "entries": self.entries,
            "reaping": self.reaping,
            "stale": self.stale,
        }


class RegistryInspector:
    """Read-only views of one deployment's registry (one ``prefix``)."""

    def __init__(self, redis: RedisConnection, clock: Any, *, prefix: str, timeout: float) -> None:
        self._redis, self._clock, self._timeout = redis, clock, timeout
        self._prefix = prefix
        self.registry = RedisRegistry(redis, clock, prefix=prefix, timeout=timeout)
        self.presence = RedisPresenceStore(redis, clock, prefix=prefix, timeout=timeout)

    async def call(self, *args: Any) -> Any:
        return await self._redis.execute(*args, within=self._timeout, clock=self._clock)

    def key(self, *parts: str) -> bytes:
        return (self._prefix + ":".join(parts)).encode("utf-8", "surrogatepass")

    async def gather(self, calls: Iterable[Any]) -> list[Any]:
        return list(await gatherResults([Deferred.fromCoroutine(c) for c in calls]))

    async def scan(self, command: str, key: bytes) -> list[bytes]:
        """SSCAN or HSCAN to the end, so a big set never blocks Redis in one reply."""
        cursor, found = b"0", []
        while True:
            cursor, batch = await self.call(command, key, cursor, "COUNT", 1000)
            found += batch
            if cursor in (b"0", "0"):
                return found

    # -- nodes ---------------------------------------------------------------

    async def _node(self, server_id: str, escaped: str, record: bytes | None) -> NodeState:
        lease_key = self.key("node", escaped)
        current, ttl, entries, reaping = await self.gather(
            [
                self.call("GET", lease_key),
                self.call("PTTL", lease_key),
                self.call("SCARD", self.key("server", escaped, "sockets")),
                self.call("SCARD", self.key("server", escaped, "reaping")),
            ]
        )
        alive = ttl != -2
        recorded = text(record) if record is not None else None
        return NodeState(
            server_id=server_id,
            escaped=escaped,
            lease="alive" if alive else "expired" if recorded else "none",
            ttl_ms=ttl if alive and ttl >= 0 else None,
            generation=text(current) if current is not None else recorded,
            record=recorded,
            entries=entries,
            reaping=reaping,
        )

    async def nodes(self) -> list[NodeState]:
        """Every server id with a lease, a lease record or entries, sorted."""
        records = pairs(await self.call("HGETALL", self.key("nodes")))
        servers = pairs(await self.call("HGETALL", self.key("servers")))
        ids = sorted(set(records) | set(servers))
        found = await self.gather(
            self._node(sid, text(servers[sid]) if sid in servers else escape(sid), records.get(sid))
            for sid in ids
        )
        # A reaped id stays in ``servers`` until the next sweep forgets it: nothing to show.
        return [n for n in found if n.lease != "none" or n.entries or n.reaping]

    async def lease_alive(self, server_ids: Iterable[str]) -> dict[str, bool]:
        ids = sorted(set(server_ids))
        ttls = await self.gather(self.call("PTTL", self.key("node", escape(s))) for s in ids)
        return {sid: ttl != -2 for sid, ttl in zip(ids, ttls, strict=True)}

    # -- the one write -------------------------------------------------------

    async def purge(self) -> dict[str, list[Entry]]:
        """Reap every expired node, as the nodes' own sweepers do, presence included.

        A node that reaps tells presence that those users may be offline now;
        so does this, then runs the due checks itself, in case no node runs.
        """
        removed: dict[str, list[Entry]] = {}
        for server_id in await self.registry.expired_servers():
            gone = await self.registry.reap(server_id)
            if gone is not None:  # None: it renewed its lease meanwhile, it lives
                removed[server_id] = gone
        users = sorted({(e.tenant_id, e.user_id) for gone in removed.values() for e in gone})
        if users:
            await self.presence.schedule_checks(users, 0.0)
            await self.presence.run_due_checks()
        return removed


def entry_json(entry: Entry) -> dict[str, Any]:
    """An entry as the registry stores it (camelCase, times in ms)."""
    data: dict[str, Any] = json.loads(entry.to_json())
    return data
