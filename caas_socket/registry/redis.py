"""Redis registry: the cluster backend, with the semantics of :mod:`.memory`.

Every write that could race is one Lua script (see ``lua/`` and
``docs/REDIS.rst`` for the key layout), so several nodes may share one Redis
without locks.  Scripts are sent with EVALSHA and re-sent whole on NOSCRIPT
(Redis restarted empty or its script cache was flushed).  Reaping a big node is
split into batches of at most ``batch_size`` entries so no script call blocks
Redis for long; the first batch sets the tombstone that fences the old
generation, so the split never lets a dead node write again.

A call that times out raises :class:`~.interfaces.RegistryUnavailable`; a write
that timed out may or may not have been applied, which is safe because every
write here is idempotent or checked (unregister only removes its own socket).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from twisted.internet.interfaces import IReactorTime

from caas_socket.naming import escape as escape_id
from caas_socket.redis_connection import LuaScript, RedisConnection

from .interfaces import DeviceLimitPolicy, Entry, Fenced, LeaseState, Registration

__all__ = ["RedisRegistry", "escape_id", "load_scripts", "user_key"]

_SCRIPTS = (
    "register",
    "unregister",
    "touch",
    "find_stale",
    "restore",
    "acquire",
    "renew",
    "release",
    "reap",
    "drain",
    "expired_servers",
    "server_entries",
)


def load_scripts() -> dict[str, LuaScript]:
    """Read the scripts shipped as package data, each prefixed with ``_lib.lua``."""
    folder = resources.files("caas_socket.registry").joinpath("lua")
    lib = folder.joinpath("_lib.lua").read_bytes()
    return {
        name: LuaScript(name, lib + b"\n" + folder.joinpath(f"{name}.lua").read_bytes())
        for name in _SCRIPTS
    }


def user_key(tenant_id: str, user_id: str) -> str:
    """The user's hash key, without the prefix: ``conn:{tenant}:{user}``.

    Ids are escaped with :func:`caas_socket.naming.escape`, the rule room names
    use too: ordinary ids stay verbatim, ``:`` can never be ambiguous.
    """
    return f"conn:{escape_id(tenant_id)}:{escape_id(user_id)}"


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _entry(raw: bytes) -> Entry:
    return Entry.from_json(raw.decode("utf-8", "surrogatepass"))


class RedisRegistry:
    """A :class:`~.interfaces.Registry` on Redis; one instance per node.

    :param redis: the shared connection pool (see :func:`~caas_socket.redis_connection.connect`).
    :param clock: bounds every call by ``timeout`` seconds.
    :param prefix: prepended to every key, so several deployments can share a Redis.
    :param tombstone_ttl: how long a reaped generation stays fenced, in seconds.
        A node paused longer than that would renew as ``REACQUIRED`` instead of
        ``REAPED``; it must be far longer than any plausible pause.
    :param batch_size: the most entries one script call removes or reads.
    """

    def __init__(
        self,
        redis: RedisConnection,
        clock: IReactorTime,
        *,
        prefix: str = "caas:",
        timeout: float = 1.0,
        tombstone_ttl: float = 7 * 24 * 3600.0,
        batch_size: int = 1000,
    ) -> None:
        self._redis, self._clock, self._timeout = redis, clock, timeout
        self._prefix = _b(prefix)
        self._tombstone_ms = max(1, round(tombstone_ttl * 1000))
        self._batch = batch_size
        self._scripts = load_scripts()
        self._server_id: str | None = None
        self._generation: str | None = None
        self._ttl_ms = 0

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._redis.run_script(
            self._scripts[name],
            (self._prefix, *args),
            within=self._timeout,
            clock=self._clock,
        )

    def _fence(self) -> tuple[bytes, bytes]:
        """The lease a write is fenced by: ``(escaped server id, generation)``."""
        if self._generation is None:
            return b"", b""
        return _b(escape_id(self._server_id or "")), _b(self._generation)

    @staticmethod
    def _location(entry: Entry) -> tuple[bytes, ...]:
        return _b(user_key(entry.tenant_id, entry.user_id)), _b(entry.device_id)

    # -- connections -------------------------------------------------------

    async def register(
        self, entry: Entry, max_devices: int, policy: DeviceLimitPolicy
    ) -> Registration:
        reply = await self._run(
            "register",
            *self._fence(),
            *self._location(entry),
            _b(entry.socket_id),
            _b(entry.server_id),
            _b(escape_id(entry.server_id)),
            _b(entry.to_json()),
            entry.last_activity,
            max_devices,
            policy.value,
        )
        if reply[0] == b"fenced":
            raise Fenced(f"lease of {self._server_id} is not held")
        if reply[0] == b"rejected":
            return Registration(accepted=False)
        previous = _entry(reply[1]) if reply[1] else None
        replaced = previous if previous and previous.socket_id != entry.socket_id else None
        evicted = tuple(_entry(raw) for raw in reply[2:])
        return Registration(accepted=True, replaced=replaced, evicted=evicted)

    async def unregister(self, entry: Entry) -> bool:
        removed = await self._run(
            "unregister", *self._location(entry), _b(entry.socket_id), _b(entry.server_id)
        )
        return bool(removed)

    async def user_entries(self, tenant_id: str, user_id: str) -> list[Entry]:
        key = self._prefix + _b(user_key(tenant_id, user_id))
        values = await self._redis.execute("HVALS", key, within=self._timeout, clock=self._clock)
        return [_entry(raw) for raw in values]

    async def server_entries(self, server_id: str) -> list[Entry]:
        found: dict[str, Entry] = {}  # SSCAN may return a member twice
        cursor: bytes = b"0"
        while True:
            reply = await self._run("server_entries", _b(escape_id(server_id)), cursor, self._batch)
            cursor = reply[0]
            for raw in reply[1:]:
                entry = _entry(raw)
                found[entry.socket_id] = entry
            if cursor == b"0":
                return list(found.values())

    async def touch(self, activity: Iterable[tuple[Entry, int]]) -> None:
        batch: list[Any] = []
        for entry, when in activity:
            batch += [*self._location(entry), _b(entry.socket_id), int(when)]
            if len(batch) >= 4 * self._batch:
                await self._run("touch", *batch)
                batch = []
        if batch:
            await self._run("touch", *batch)

    async def find_stale(self, older_than: int, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        reply = await self._run("find_stale", int(older_than), int(limit))
        return [_entry(raw) for raw in reply]

    async def restore(self, entries: Sequence[Entry]) -> list[Entry]:
        lost: list[Entry] = []
        for start in range(0, len(entries), self._batch):
            chunk = entries[start : start + self._batch]
            args: list[Any] = []
            for e in chunk:
                args += [*self._location(e), _b(e.socket_id), _b(e.server_id)]
                args += [_b(escape_id(e.server_id)), _b(e.to_json())]
                args += [e.connected_at, e.last_activity]
            reply = await self._run("restore", *self._fence(), *args)
            if reply[0] == b"fenced":
                raise Fenced(f"lease of {self._server_id} is not held")
            lost += [chunk[i] if isinstance(i, int) else _entry(i) for i in reply[1:]]
        return lost

    # -- node leases -------------------------------------------------------

    async def _drain(self, server_id: str, reply: list[Any]) -> list[Entry]:
        """Collect a first batch and run the rest of a reap, acquire or release."""
        removed = [_entry(raw) for raw in reply[1:]]
        while reply[0] > 0:
            reply = await self._run("drain", _b(escape_id(server_id)), self._batch)
            removed += [_entry(raw) for raw in reply[1:]]
        return removed

    async def acquire_lease(self, server_id: str, ttl: float) -> list[Entry]:
        generation = uuid.uuid4().hex
        ttl_ms = max(1, round(ttl * 1000))
        reply = await self._run(
            "acquire",
            _b(server_id),
            _b(escape_id(server_id)),
            generation,
            ttl_ms,
            self._tombstone_ms,
            self._batch,
        )
        # From here on writes are fenced by the new generation, even if the
        # rest of the old incarnation's entries are still being removed.
        self._server_id, self._generation, self._ttl_ms = server_id, generation, ttl_ms
        return await self._drain(server_id, reply)

    async def renew_lease(self) -> LeaseState:
        if self._server_id is None or self._generation is None:
            raise Fenced("no lease was acquired")
        sid = self._server_id
        state = await self._run(
            "renew", _b(sid), _b(escape_id(sid)), self._generation, self._ttl_ms
        )
        return LeaseState(state.decode())

    async def release_lease(self) -> None:
        if self._server_id is None:
            return
        sid = self._server_id
        reply = await self._run(
            "release", _b(sid), _b(escape_id(sid)), self._generation or "", self._batch
        )
        await self._drain(sid, reply)
        self._generation = None

    async def expired_servers(self) -> list[str]:
        reply = await self._run("expired_servers")
        return sorted(raw.decode("utf-8", "surrogatepass") for raw in reply)

    async def reap(self, server_id: str) -> list[Entry] | None:
        reply = await self._run(
            "reap", _b(server_id), _b(escape_id(server_id)), self._tombstone_ms, self._batch
        )
        if reply[0] < 0:
            return None  # its lease is held again
        return await self._drain(server_id, reply)
