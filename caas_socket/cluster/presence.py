"""Presence state in Redis, changed and published by scripts.

Each change is one script call that reads the registry, updates the state
and PUBLISHes on ``{prefix}presence`` atomically, so changes of a user are
published in the order they happened, from whichever node.  Pending offline
checks live in a sorted set, so any node runs them when due; a check runs
once even when several nodes sweep at the same time.

Published messages (JSON, one per change)::

    {"v":1,"tenantId":"acme","userId":"alice","deviceId":"phone"|null,
     "status":"online"|"offline","version":1764100000123,"at":1764100000123}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from twisted.internet.interfaces import IReactorTime

from ..app.presence import PresenceChange, PresenceState
from ..naming import escape
from ..redis_connection import LuaScript, RedisConnection

__all__ = ["RedisPresenceStore", "decode_change"]

_SWEEP_BATCH = 200


def _script(name: str) -> LuaScript:
    source = resources.files("caas_socket.cluster").joinpath(f"lua/{name}.lua").read_bytes()
    return LuaScript(name, source)


_ONLINE = _script("presence_online")
_SCHEDULE = _script("presence_schedule")
_SWEEP = _script("presence_sweep")
_GET = _script("presence_get")


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def decode_change(payload: bytes) -> PresenceChange:
    """Parse a message of the presence channel (``ValueError`` if malformed)."""
    try:
        raw = json.loads(payload)
        return PresenceChange(
            tenant_id=str(raw["tenantId"]),
            user_id=str(raw["userId"]),
            device_id=None if raw["deviceId"] is None else str(raw["deviceId"]),
            status=str(raw["status"]),
            version=int(raw["version"]),
            at=int(raw["at"]),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a presence change: {e}") from None


class RedisPresenceStore:
    """A :class:`~caas_socket.app.presence.PresenceStore` on Redis."""

    def __init__(
        self, redis: RedisConnection, clock: IReactorTime, *, prefix: str, timeout: float
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = _b(prefix)
        self._timeout = timeout
        self.channel = self._prefix + b"presence"

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def _run(self, script: LuaScript, *args: Any) -> Any:
        return await self._redis.run_script(
            script, (self._prefix, *args), within=self._timeout, clock=self._clock
        )

    async def device_online(self, tenant_id: str, user_id: str, device_id: str) -> None:
        await self._run(
            _ONLINE,
            _b(escape(tenant_id)),
            _b(escape(user_id)),
            _b(tenant_id),
            _b(user_id),
            _b(device_id),
            self._now_ms(),
        )

    async def schedule_checks(self, users: Sequence[tuple[str, str]], delay: float) -> None:
        due = self._now_ms() + int(delay * 1000)
        for start in range(0, len(users), _SWEEP_BATCH):
            members = [
                _b(f"{escape(tenant)}:{escape(user)}")
                for tenant, user in users[start : start + _SWEEP_BATCH]
            ]
            await self._run(_SCHEDULE, due, *members)

    async def run_due_checks(self) -> None:
        while await self._run(_SWEEP, self._now_ms(), _SWEEP_BATCH) >= _SWEEP_BATCH:
            pass

    async def get(self, tenant_id: str, user_ids: Sequence[str]) -> list[PresenceState]:
        rows = await self._run(_GET, _b(escape(tenant_id)), *(_b(escape(u)) for u in user_ids))
        return [
            PresenceState(
                user_id,
                row[0].decode(),
                tuple(sorted(d.decode("utf-8", "surrogatepass") for d in row[2:])),
                int(row[1]),
            )
            for user_id, row in zip(user_ids, rows, strict=True)
        ]
